/*
 * events.h — rows of dfe_airbyte.events, written by the workers; each names
 * the current target (target_scope.h).
 */
#ifndef DFE_AIRBYTE_EVENTS_H
#define DFE_AIRBYTE_EVENTS_H

/*
 * Insert one event.  Must run inside a transaction (SPI is connected and
 * disconnected here).  severity: "info", "warning" or "critical"; data may
 * be NULL or JSON text.  A warning or critical event is also written to the
 * server log as a WARNING, so that log-based alerting sees it.
 */
extern void dfe_event(const char *severity, const char *kind,
					  const char *object, const char *detail,
					  const char *data_json);

#endif
