-- dfe_airbyte upgrade script 0.1.0 -> 0.2.0, assembled from
-- sql/update/0.1.0--0.2.0/*.sql in name order (one file per feature, the
-- same split as sql/install/).  Every change to sql/install/ needs its
-- counterpart here: test/t/090_upgrade.pl checks that an upgraded install
-- equals a fresh one and keeps its data.

\echo Use "ALTER EXTENSION dfe_airbyte UPDATE TO '0.2.0'" to load this file. \quit
