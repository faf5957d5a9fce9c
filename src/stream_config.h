/*
 * stream_config.h — the Airbyte stream configuration built from the
 * allowlist: dfe_airbyte_stream_config() and the PATCH body.
 */
#ifndef DFE_AIRBYTE_STREAM_CONFIG_H
#define DFE_AIRBYTE_STREAM_CONFIG_H

/*
 * The stream configuration as compact JSON text with the keys in the
 * gem's order (name, syncMode, cursorField, primaryKey, selectedFields):
 * the body of the connection PATCH.  Needs a transaction and an active
 * snapshot (it reads the current target's rows of dfe_airbyte.allowlist
 * and, through target.h, the target's catalog: SPI for the local one, a
 * caller already connected to SPI is fine).  The result is palloc'd in the
 * caller's memory context.  The same lists and catalog give byte-identical
 * text.
 */
extern char *dfe_stream_config_build(void);

/* the Airbyte heartbeat stream, always last */
#define STREAM_HEARTBEAT_NAME "airbyte_heartbeat"

#endif
