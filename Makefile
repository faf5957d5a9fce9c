# dfe_airbyte — PGXS build.
#
#   make                  # Debian's PostgreSQL $(PG_MAJOR), default 15
#   make PG_MAJOR=17      # /usr/lib/postgresql/17/bin/pg_config
#   make PG_CONFIG=/path/to/pg_config
#   make install
#
# The install script is assembled from sql/install/*.sql (one file per
# concern, applied in name order) so that each feature owns its own SQL;
# upgrade scripts likewise from sql/update/FROM--TO/*.sql.

EXTENSION    = dfe_airbyte
EXTVERSION   = 0.2.0
MODULE_big   = dfe_airbyte
OBJS         = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
# Released install scripts are frozen as shipped (sql/dfe_airbyte--X.sql,
# committed); the current one and each upgrade script are assembled from
# one file per feature.
UPGRADES     = 0.1.0--0.2.0
DATA         = sql/$(EXTENSION)--0.1.0.sql
DATA_built   = sql/$(EXTENSION)--$(EXTVERSION).sql $(foreach u,$(UPGRADES),sql/$(EXTENSION)--$(u).sql)
PGFILEDESC   = "dfe_airbyte - Airbyte replication to BigQuery, run from the database"

# pg_regress files: sql/<name>.sql against expected/<name>.out
REGRESS      = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/$(EXTENSION)--%,$(wildcard sql/*.sql))))
# make installcheck runs them against a running server configured as README.md
# ("Installing") says; test/check runs them in a temporary instance with
# test/regress.conf.  pg_regress creates and drops the database contrib_regression.
REGRESS_OPTS = --load-extension=$(EXTENSION)

PG_CPPFLAGS  = -I$(srcdir)/src -DDFE_AIRBYTE_VERSION=\"$(EXTVERSION)\" -Wall -Wextra -Werror \
               -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK   = -lcurl -lcjson -lyaml

# rebuild objects when a header they include changes (.deps/*.Po)
override autodepend = yes

# JIT bitcode is not needed and would require clang on the build machine
override with_llvm = no

# The PostgreSQL major to build against (test/check, test/demo and the test
# scripts read the same variable from the environment).
PG_MAJOR    ?= 15
PG_CONFIG   ?= $(shell test -x /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config && echo /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config || echo pg_config)
PGXS        := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard sql/install/*.sql))
	cat $^ > $@

sql/$(EXTENSION)--0.1.0--0.2.0.sql: $(sort $(wildcard sql/update/0.1.0--0.2.0/*.sql))
	cat $^ > $@

EXTRA_CLEAN = tmp_install results regression.diffs regression.out log
