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

def context(dir)
  ActiveRecord::MigrationContext.new([dir], ActiveRecord::SchemaMigration)
end

begin
  case ARGV[0]
  when "lock_key"
    # the private method ActiveRecord::Migrator#with_advisory_lock uses
    migrator = ActiveRecord::Migrator.new(:up, [], ActiveRecord::SchemaMigration)
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
