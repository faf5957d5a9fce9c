/*
 * restore.h — is this database a restore of another server's backup?
 * (restore.c)
 *
 * The guard records the server's system identifier (pg_control_system())
 * in dfe_airbyte.server_identity the first time it runs.  When the
 * database later runs on a server with another identifier — a dump or
 * backup of another environment restored here — its slot history,
 * recreations and re-sync jobs belong to that other server: the guard
 * reports 'restored' and neither recreates a slot nor asks Airbyte for
 * anything until a DBA runs dfe_airbyte_confirm_restore().  A promoted
 * standby keeps its primary's identifier, so a failover is not a restore.
 *
 * A remote target is held the same way, per target: the guard records the
 * identifier of the server that answers for it (dfe_airbyte.guard_targets,
 * slot_remote.c); another one than its history's is held until
 * dfe_airbyte_confirm_restore(target).  A higher timeline with the same
 * identifier is a failover and holds nothing.
 */
#ifndef DFE_AIRBYTE_RESTORE_H
#define DFE_AIRBYTE_RESTORE_H

#include "postgres.h"

typedef enum DfeIdentity
{
	IDENTITY_SAME,				/* recorded, and it is this server's */
	IDENTITY_RECORDED_NOW,		/* there was none: this server's was recorded */
	IDENTITY_NONE,				/* there is none (and record was false) */
	IDENTITY_OTHER				/* another server's: an unconfirmed restore */
} DfeIdentity;

/*
 * Inside a transaction with SPI connected: compare the recorded identifier
 * with this server's; with record, record it when there is none.
 * *recorded (optional) receives the recorded identifier as text.
 */
extern DfeIdentity dfe_identity_check(bool record, char **recorded);

/* in a short transaction of its own (worker tasks): an unconfirmed restore? */
extern bool dfe_restore_unconfirmed(void);

/* this server's system identifier as text */
extern char *dfe_system_identifier_text(void);

#endif
