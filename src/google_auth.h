/*
 * google_auth.h — a Google access token from the external-account credential
 * configuration (README.md, "Settings and secrets"): the Azure workload-identity chain
 * subject token -> Google STS -> service account impersonation.
 *
 * Makes HTTP calls: in the worker, call it outside a transaction.
 */
#ifndef DFE_AIRBYTE_GOOGLE_AUTH_H
#define DFE_AIRBYTE_GOOGLE_AUTH_H

#include "postgres.h"

#include "datatype/timestamp.h"

/*
 * A Google OAuth access token for the cloud-platform scope.  Cached per
 * process (TopMemoryContext) until shortly before it expires: 5 minutes
 * before expireTime, or half its lifetime when it lives less than 10
 * minutes.  A changed credential configuration (or Azure setting) starts a
 * new chain.  Raises an ERROR naming the failing step; never shows a token.
 * The result stays valid until the next call of dfe_google_access_token() or
 * dfe_google_forget_access_token().
 */
extern const char *dfe_google_access_token(void);

/* drop the cached token (e.g. after BigQuery answered 401) */
extern void dfe_google_forget_access_token(void);

#endif
