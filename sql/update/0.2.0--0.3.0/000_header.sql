-- The step from 0.2.0 to 0.3.0: every change to the installed SQL objects
-- of 0.3.0, one file per feature (NN_feature.sql, applied in name order).
-- It is the upgrade script and the end of the fresh install alike
-- (docs/development.md, "Releasing"), so write each object once, here:
-- CREATE OR REPLACE a changed function or view (DROP and CREATE it, with its
-- comment and grants, when its result columns change), ALTER TABLE for a
-- table, and nothing that depends on the rows a database happens to hold.

SET LOCAL search_path = pg_catalog, pg_temp;
