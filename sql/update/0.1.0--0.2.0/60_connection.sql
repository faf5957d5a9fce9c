-- upgrade part 60 (connection): dfe_airbyte_repair() hands over a full
-- re-sync for "the slot is ahead of Airbyte's saved position" through
-- dfe_airbyte.slot_recreations with reason airbyte_state_behind.
ALTER TABLE dfe_airbyte.slot_recreations DROP CONSTRAINT slot_recreations_reason_check;
ALTER TABLE dfe_airbyte.slot_recreations ADD CONSTRAINT slot_recreations_reason_check
    CHECK (reason IN ('over_limit', 'lost', 'missing', 'airbyte_state_behind'));
