# Runs real ActiveRecord migrations for test/t/060_rails.pl, the way
# `rails db:migrate` does (ActiveRecord::MigrationContext#migrate: the
# migration advisory lock for the whole run, one transaction per migration),
# without a Rails application.
#
#   ruby ar_migrate.rb migrate DIR        run DIR's migrations
#   ruby ar_migrate.rb rake DIR RAKEFILE  define db:migrate (running DIR's
#                                         migrations), load RAKEFILE (e.g. the
#                                         README's hook) and invoke db:migrate
#   ruby ar_migrate.rb lock_key           print ActiveRecord's migration lock key
#
# Connection from PGHOST, PGPORT, PGDATABASE, PGUSER.  DFE_RAILS_ROOT, when
# set, is Rails.root (for the README's File.read(Rails.root.join(...))), and
# Rails.env is RAILS_ENV (default development).
# Prints "finished_at <unix time>" once the migrations have run and the lock
# is released; on an error prints "error: <message>" and exits 1.
require "active_record"
require "pathname"

if ENV["DFE_RAILS_ROOT"]
  module Rails
    def self.root
      Pathname.new(ENV.fetch("DFE_RAILS_ROOT"))
    end

    def self.env
      ActiveSupport::StringInquirer.new(ENV.fetch("RAILS_ENV", "development"))
    end
  end
end

ActiveRecord::Base.establish_connection(
  adapter: "postgresql",
  host: ENV.fetch("PGHOST"),
  port: ENV.fetch("PGPORT").to_i,
  database: ENV.fetch("PGDATABASE"),
  username: ENV.fetch("PGUSER")
)
$stdout.sync = true

# ActiveRecord 7.1 made the schema_migrations and ar_internal_metadata
# tables objects of the connection (pool) instead of the model classes
# ActiveRecord::SchemaMigration and ActiveRecord::InternalMetadata that 6.1
# and 7.0 pass around (activerecord/CHANGELOG.md of 7.1).  Debian 12 ships
# 6.1, Debian 13 7.2: both are used here.
AR71 = ActiveRecord.gem_version >= Gem::Version.new("7.1")

def schema_tables
  pool = ActiveRecord::Base.connection_pool
  # 7.2 keeps them on the pool, 7.1 on the connection
  owner = pool.respond_to?(:schema_migration) ? pool : ActiveRecord::Base.connection
  [owner.schema_migration, owner.internal_metadata]
end

def context(dir)
  return ActiveRecord::MigrationContext.new([dir], ActiveRecord::SchemaMigration) unless AR71

  ActiveRecord::MigrationContext.new([dir], *schema_tables)
end

def migrator
  return ActiveRecord::Migrator.new(:up, [], ActiveRecord::SchemaMigration) unless AR71

  ActiveRecord::Migrator.new(:up, [], *schema_tables)
end

begin
  case ARGV[0]
  when "lock_key"
    # the private method ActiveRecord::Migrator#with_advisory_lock uses
    puts "salt #{ActiveRecord::Migrator::MIGRATOR_SALT}"
    puts "lock_key #{migrator.send(:generate_migrator_advisory_lock_id)}"
  when "migrate"
    context(ARGV[1]).migrate
    puts "finished_at #{Time.now.to_f}"
  when "rake"
    require "rake"
    dir = ARGV[1]
    Rake.application.init("ar_migrate", [])
    Rake::Task.define_task("db:migrate") { context(dir).migrate }
    Rake.load_rakefile(ARGV[2])
    Rake::Task["db:migrate"].invoke
    puts "finished_at #{Time.now.to_f}"
  else
    abort "usage: ar_migrate.rb migrate DIR | rake DIR RAKEFILE | lock_key"
  end
rescue StandardError => e
  puts "error: #{e.class}: #{e.message}"
  exit 1
end
