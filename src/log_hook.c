/*
 * log_hook.c — keeps the values of dfe_airbyte's secret settings out of the
 * server log (an emit_log_hook, installed by _PG_init in every process).
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#include "settings.h"
#include "shared.h"

static emit_log_hook_type prev_emit_log_hook = NULL;

/*
 * PostgreSQL logs every setting a reload changes, value included:
 * 'parameter "dfe_airbyte.airbyte_client_secret" changed to "..."' at LOG
 * in the postmaster, and it has no flag to hide a value.  This hook, which
 * the postmaster runs because we are preloaded, rewrites those lines for our
 * secret settings before they reach the log; the secret-holding settings are
 * listed here.
 */
static const char *const secret_settings[] = {
	"dfe_airbyte.airbyte_client_secret",
	"dfe_airbyte.google_credentials",
};

static bool
mentions_secret_setting(const char *text)
{
	int			i;

	for (i = 0; text && i < lengthof(secret_settings); i++)
	{
		if (strstr(text, secret_settings[i]) != NULL)
			return true;
	}
	return false;
}

/* inline credential JSON is a secret; a credential file path is not */
static const char *
if_inline_json(const char *credentials)
{
	if (credentials && credentials[strspn(credentials, " \t\r\n")] == '{')
		return credentials;
	return NULL;
}

/*
 * text with every occurrence of a secret replaced by [redacted] (allocated
 * in ErrorContext), or NULL when it holds none.
 */
static char *
without_secrets(const char *text, const char *const *secrets, int nsecrets)
{
	StringInfoData out;
	bool		found = false;
	int			i;

	if (text == NULL)
		return NULL;
	for (i = 0; i < nsecrets && !found; i++)
		found = secrets[i] && strstr(text, secrets[i]) != NULL;
	if (!found)
		return NULL;

	/*
	 * One pass per secret over the previous pass's result, copying around
	 * each hit: the scan never revisits its own "[redacted]" marks, so a
	 * secret that is a substring of the mark cannot loop.
	 */
	out.data = pstrdup(text);
	for (i = 0; i < nsecrets; i++)
	{
		StringInfoData next;
		const char *p = out.data;
		const char *hit;

		if (secrets[i] == NULL || strstr(p, secrets[i]) == NULL)
			continue;
		initStringInfo(&next);
		while ((hit = strstr(p, secrets[i])) != NULL)
		{
			appendBinaryStringInfo(&next, p, hit - p);
			appendStringInfoString(&next, "[redacted]");
			p = hit + strlen(secrets[i]);
		}
		appendStringInfoString(&next, p);
		pfree(out.data);
		out = next;
	}
	return out.data;
}

/*
 * The secrets' values, from the settings and from the environment variables
 * they fall back to (a Terraform-provisioned pod sets AIRBYTE_CLIENT_SECRET
 * and GOOGLE_CLOUD_CREDENTIALS, not the GUCs), are hidden from every part
 * of a log line: message, detail, hint, context and internal query.  The
 * message of a line that held one is replaced outright (its wording may
 * reveal the secret's shape); the other parts keep their text around a
 * [redacted] mark.
 */
static void
hide_secret_values(ErrorData *edata)
{
	const char *candidates[] = {
		dfe_airbyte_client_secret,
		getenv("AIRBYTE_CLIENT_SECRET"),
		if_inline_json(dfe_google_credentials),
		if_inline_json(getenv("GOOGLE_CLOUD_CREDENTIALS")),
	};
	const char *secrets[lengthof(candidates)];
	char	  **fields[] = {&edata->detail, &edata->detail_log, &edata->hint,
	&edata->context, &edata->internalquery};
	int			nsecrets = 0;
	int			i;
	MemoryContext old;

	/* very short values would hide ordinary words */
	for (i = 0; i < lengthof(candidates); i++)
		if (candidates[i] && strlen(candidates[i]) >= 6)
			secrets[nsecrets++] = candidates[i];
	if (nsecrets == 0)
		return;

	old = MemoryContextSwitchTo(ErrorContext);
	/* the STATEMENT line would repeat a statement that holds one */
	if (without_secrets(debug_query_string, secrets, nsecrets) != NULL)
		edata->hide_stmt = true;
	if (without_secrets(edata->message, secrets, nsecrets) != NULL)
		edata->message = pstrdup("a message that contained a dfe_airbyte secret was hidden");
	for (i = 0; i < lengthof(fields); i++)
	{
		char	   *clean = without_secrets(*fields[i], secrets, nsecrets);

		if (clean)
			*fields[i] = clean;
	}
	MemoryContextSwitchTo(old);
}

static void
dfe_emit_log_hook(ErrorData *edata)
{
	/*
	 * log_statement / log_min_duration_statement would log
	 * "ALTER SYSTEM SET dfe_airbyte.airbyte_client_secret = '...'" verbatim,
	 * and an error's STATEMENT line likewise.
	 */
	if (edata->message && mentions_secret_setting(edata->message) &&
		(strncmp(edata->message, "statement: ", 11) == 0 ||
		 strncmp(edata->message, "duration: ", 10) == 0 ||
		 strncmp(edata->message, "execute ", 8) == 0))
	{
		MemoryContext old = MemoryContextSwitchTo(ErrorContext);

		edata->message = pstrdup("statement: (hidden: it sets a dfe_airbyte secret)");
		MemoryContextSwitchTo(old);
	}
	if (mentions_secret_setting(debug_query_string))
		edata->hide_stmt = true;

	if (edata->message && strncmp(edata->message, "parameter \"dfe_airbyte.", 23) == 0)
	{
		int			i;

		for (i = 0; i < lengthof(secret_settings); i++)
		{
			size_t		len = strlen(secret_settings[i]);

			if (strncmp(edata->message + 11, secret_settings[i], len) == 0 &&
				edata->message[11 + len] == '"')
			{
				MemoryContext old = MemoryContextSwitchTo(ErrorContext);

				edata->message = psprintf("parameter \"%s\" changed (value hidden)",
										  secret_settings[i]);
				MemoryContextSwitchTo(old);
				break;
			}
		}
	}
	/* whatever the wording (translations), never let a secret's value through */
	hide_secret_values(edata);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
dfe_install_log_hook(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = dfe_emit_log_hook;
}
