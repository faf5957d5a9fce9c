/*
 * log_hook.c — keeps the values of dfe_airbyte's secret settings out of the
 * server log (an emit_log_hook, installed by _PG_init in every process).
 */
#include "postgres.h"

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
	if (edata->message)
	{
		/* google_credentials is secret when it holds the JSON, not when it is a path */
		const char *values[] = {
			dfe_airbyte_client_secret,
			(dfe_google_credentials && dfe_google_credentials[strspn(dfe_google_credentials, " \t\r\n")] == '{')
			? dfe_google_credentials : NULL
		};
		int			i;

		for (i = 0; i < lengthof(values); i++)
		{
			if (values[i] && strlen(values[i]) >= 6 && strstr(edata->message, values[i]))
			{
				MemoryContext old = MemoryContextSwitchTo(ErrorContext);

				edata->message = psprintf("a message that contained a dfe_airbyte secret was hidden");
				edata->detail = NULL;
				MemoryContextSwitchTo(old);
				break;
			}
		}
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
dfe_install_log_hook(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = dfe_emit_log_hook;
}
