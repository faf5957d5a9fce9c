-- bigquery branch, part 25: config_problems knows the excluded list (issue 10):
-- it stops asking about excluded columns and reports a column both
-- allowlisted and excluded as an error.  Same columns: CREATE OR REPLACE.
-- (Other branches change this view too: whoever merges keeps ONE complete
-- definition, the install piece's, here or in the last upgrade piece.)

-- (dfe_airbyte.config_problems is redefined in 90_views.sql)