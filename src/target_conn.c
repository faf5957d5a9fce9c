/*
 * target_conn.c — non-blocking, multiplexed libpq connections to remote
 * targets (see target_conn.h and docs/design.md, "Targets").
 *
 * Why not PostgreSQL's own helpers: libpq/libpq-be-fe-helpers.h has only the
 * connect half on PostgreSQL 16 (libpqsrv_connect*) and the query half from
 * 17 (libpqsrv_exec, libpqsrv_get_result); both wait on one socket without a
 * deadline, and the header itself notes that its connections are not put
 * into non-blocking mode.  The slot guard must sample many targets within
 * one check interval, so every connection here is a small state machine
 * driven from one WaitEventSet — the way pg_auto_failover's health check
 * worker (src/monitor/health_check_worker.c) and Citus'
 * FinishConnectionListEstablishment() (connection_management.c) do it.
 *
 * Host names: libpq resolves them inside PQconnectStartParams() with a
 * blocking getaddrinfo() — its documentation says hostaddr must be used "to
 * prevent DNS queries from being made" for the call not to block.  So a name
 * is looked up here with glibc's getaddrinfo_a(GAI_NOWAIT) and polled, and
 * libpq gets hostaddr (the address) together with host (the name, which
 * TLS verify-full and the passfile lookup use).  glibc runs those lookups on
 * helper threads created with every signal blocked (sysdeps gai_misc.h,
 * __gai_create_helper_thread), so PostgreSQL's signal handling is
 * untouched.  An address is reused for DNS_TTL_S and looked up again after
 * any connection failure: Azure's HA failover moves the name to the
 * standby's address.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/stat.h>

#include "libpq-fe.h"
#include "mb/pg_wchar.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/wait_event.h"

#include "settings.h"
#include "target_conn.h"

#define DNS_POLL_MS	20			/* lookups have no socket: poll them */
#define DNS_TTL_S	60
#define MAX_WAIT_MS	1000		/* interrupts are checked at least this often */
#define MAX_KEYWORDS 48
#define MAX_ADDRS	4			/* libpq tries each in turn (host and hostaddr lists) */

typedef struct DnsLookup
{
	struct gaicb cb;
	struct addrinfo hints;
	char		name[FLEXIBLE_ARRAY_MEMBER];
} DnsLookup;

struct TargetConn
{
	MemoryContext cxt;
	char	   *name;
	const char *keywords[MAX_KEYWORDS];
	const char *values[MAX_KEYWORDS];
	int			nkw;			/* fixed part; hostaddr is added at connect */
	char	   *host;			/* a name to look up, or NULL */
	char		addr[MAX_ADDRS * (INET6_ADDRSTRLEN + 1)];	/* "a1,a2,..." */
	char	   *hosts;			/* host repeated once per address */
	TimestampTz resolved_at;
	DnsLookup  *lookup;			/* malloc'd, in flight */
	PGconn	   *conn;
	bool		fd_reserved;
	TargetConnState state;
	bool		ready;			/* can progress without waiting */
	bool		sent;
	bool		reused;			/* the query went to a connection kept from before */
	int			want;			/* WL_SOCKET_* to wait for */
	TimestampTz deadline;
	TimestampTz submitted_at;
	TimestampTz finished_at;
	/* the current query's copies and error, in cxt: freed at the next submit */
	char	   *sql;
	int			nparams;
	char	  **params;
	PGresult   *result;
	char	   *error;
	int			errcode;
	bool		timed_out;
};

/* lookups whose TargetConn gave up while glibc still works on them */
static DnsLookup **abandoned = NULL;
static int	n_abandoned = 0;

static void
free_lookup(DnsLookup *l)
{
	if (l->cb.ar_result)
		freeaddrinfo(l->cb.ar_result);
	free(l);
}

static void
reap_abandoned(void)
{
	int			i = 0;

	while (i < n_abandoned)
	{
		if (gai_error(&abandoned[i]->cb) == EAI_INPROGRESS)
			i++;
		else
		{
			free_lookup(abandoned[i]);
			abandoned[i] = abandoned[--n_abandoned];
		}
	}
}

static void
abandon_lookup(TargetConn *tc)
{
	DnsLookup  *l = tc->lookup;
	DnsLookup **grown;

	if (!l)
		return;
	tc->lookup = NULL;
	(void) gai_cancel(&l->cb);
	if (gai_error(&l->cb) != EAI_INPROGRESS)
	{
		free_lookup(l);
		return;
	}
	/* glibc still owns it: keep it until it finishes (malloc: outlives contexts) */
	grown = realloc(abandoned, sizeof(DnsLookup *) * (n_abandoned + 1));
	if (!grown)
		return;					/* leak one lookup rather than free memory in use */
	abandoned = grown;
	abandoned[n_abandoned++] = l;
}

static void
drop_connection(TargetConn *tc)
{
	if (tc->conn)
		PQfinish(tc->conn);
	tc->conn = NULL;
	if (tc->fd_reserved)
		ReleaseExternalFD();
	tc->fd_reserved = false;
}

void
dfe_tc_close(TargetConn *tc)
{
	abandon_lookup(tc);
	drop_connection(tc);
	if (tc->result)
		PQclear(tc->result);
	tc->result = NULL;
	tc->addr[0] = '\0';
	tc->state = TC_IDLE;
}

/*
 * A connection kept for later tasks (target.c) is reused only when it is
 * idle outside a transaction: an ERROR (a cancel, a shutdown) thrown while a
 * query was in flight leaves its answer unread, and a statement that opened
 * a transaction would carry it into the next task.  Closing is enough: the
 * next submit connects afresh with the session options.
 */
void
dfe_tc_settle(TargetConn *tc)
{
	bool		in_progress = tc->state != TC_IDLE && tc->state != TC_DONE && tc->state != TC_FAILED;

	if (in_progress ||
		(tc->conn && (PQstatus(tc->conn) != CONNECTION_OK ||
					  PQtransactionStatus(tc->conn) != PQTRANS_IDLE)))
		dfe_tc_close(tc);
}

static void
tc_reset_callback(void *arg)
{
	dfe_tc_close((TargetConn *) arg);
}

static void
finish(TargetConn *tc, TargetConnState state)
{
	tc->state = state;
	tc->ready = false;
	tc->want = 0;
	tc->finished_at = GetCurrentTimestamp();
}

/*
 * A kept connection found broken by the query sent on it — the server was
 * restarted or failed over, or ended the idle session, since the last
 * query: connect afresh (looking the name up again) and send the query once
 * more, instead of reporting a target as failed that is up.  A statement
 * whose answer was lost after the server committed it could so run twice;
 * the callers' statements are reads, or actions that check state first.
 */
static bool
retry_on_fresh_connection(TargetConn *tc)
{
	if (!tc->reused || (tc->state != TC_SENDING && tc->state != TC_BUSY))
		return false;
	tc->reused = false;
	drop_connection(tc);
	if (tc->result)
		PQclear(tc->result);
	tc->result = NULL;
	tc->sent = false;
	tc->addr[0] = '\0';
	tc->state = tc->host ? TC_RESOLVING : TC_CONNECTING;
	tc->ready = true;
	tc->want = 0;
	return true;
}

static void fail(TargetConn *tc, int errcode, bool drop, const char *fmt,...) pg_attribute_printf(4, 5);

/* A failure; drop: the connection is unusable (it is reopened, the name looked up again). */
static void
fail(TargetConn *tc, int errcode, bool drop, const char *fmt,...)
{
	va_list		ap;
	char		buf[1024];

	if (drop && retry_on_fresh_connection(tc))
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* libpq's messages end with a newline and may span lines */
	while (strlen(buf) > 0 && buf[strlen(buf) - 1] == '\n')
		buf[strlen(buf) - 1] = '\0';
	if (tc->error)
		pfree(tc->error);
	tc->error = MemoryContextStrdup(tc->cxt, buf);
	tc->errcode = errcode;
	if (drop)
	{
		abandon_lookup(tc);
		drop_connection(tc);
		tc->addr[0] = '\0';
	}
	finish(tc, TC_FAILED);
}

/*
 * Rejects what would put a secret into the targets table or read one from
 * anywhere but dfe_airbyte.passfile; returns NULL or the reason.
 */
static const char *
forbidden_keyword(const char *kw)
{
	if (strcmp(kw, "password") == 0)
		return "a password";
	if (strcmp(kw, "passfile") == 0)
		return "a passfile";
	if (strcmp(kw, "sslpassword") == 0)
		return "an sslpassword";
	if (strcmp(kw, "service") == 0)
		return "a service (a service file can hold a password)";
	return NULL;
}

static void
add_kw(TargetConn *tc, const char *kw, const char *val)
{
	int			i;

	for (i = 0; i < tc->nkw; i++)
		if (strcmp(tc->keywords[i], kw) == 0)
		{
			tc->values[i] = MemoryContextStrdup(tc->cxt, val);
			return;
		}
	Assert(tc->nkw < MAX_KEYWORDS - 2);
	tc->keywords[tc->nkw] = MemoryContextStrdup(tc->cxt, kw);
	tc->values[tc->nkw++] = MemoryContextStrdup(tc->cxt, val);
}

static const char *
get_kw(TargetConn *tc, const char *kw)
{
	int			i;

	for (i = 0; i < tc->nkw; i++)
		if (strcmp(tc->keywords[i], kw) == 0)
			return tc->values[i];
	return NULL;
}

static bool
is_address(const char *h)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/*
 * The session every target query runs in: names resolve only in pg_catalog
 * (every query qualifies its own), and the server ends work of ours that
 * outlives the deadline even when we could not cancel it.  The conninfo's
 * own options come first: the server applies a repeated -c in order, so ours
 * win over a search_path or timeout given there.
 */
static void
add_session_options(TargetConn *tc)
{
	const char *user_opts = get_kw(tc, "options");
	int			ms = dfe_target_timeout_ms;
	char		tcp[32];
	char	   *opts;

	opts = psprintf("%s%s-c search_path=pg_catalog,pg_temp -c statement_timeout=%d -c lock_timeout=%d "
					"-c idle_in_transaction_session_timeout=%d",
					user_opts ? user_opts : "", user_opts ? " " : "", ms, ms, ms * 2);
	add_kw(tc, "options", opts);
	pfree(opts);
	if (!get_kw(tc, "application_name"))
		add_kw(tc, "application_name", "dfe_airbyte");
	if (!get_kw(tc, "tcp_user_timeout"))
	{
		snprintf(tcp, sizeof(tcp), "%d", ms);
		add_kw(tc, "tcp_user_timeout", tcp);
	}
	add_kw(tc, "keepalives", "1");
	/* a client_encoding the text results can be read in */
	add_kw(tc, "client_encoding", GetDatabaseEncodingName());
}

static void
parse_conninfo(TargetConn *tc, const char *conninfo)
{
	char	   *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
	PQconninfoOption *o;

	if (!opts)
	{
		char		msg[512];

		strlcpy(msg, err ? err : "out of memory", sizeof(msg));
		while (strlen(msg) > 0 && msg[strlen(msg) - 1] == '\n')
			msg[strlen(msg) - 1] = '\0';
		if (err)
			PQfreemem(err);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid connection string for target \"%s\": %s", tc->name, msg),
				 errhint("Give a libpq key/value string or URI without a password, "
						 "e.g. 'host=db.example.com dbname=service user=dfe_airbyte_remote'.")));
	}
	for (o = opts; o->keyword; o++)
	{
		const char *why;

		if (!o->val)
			continue;
		if ((why = forbidden_keyword(o->keyword)) != NULL)
		{
			PQconninfoFree(opts);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the connection string of target \"%s\" must not contain %s", tc->name, why),
					 errhint("Remove it: passwords come only from the libpq password file named by "
							 "dfe_airbyte.passfile, which a superuser sets.")));
		}
		add_kw(tc, o->keyword, o->val);
	}
	PQconninfoFree(opts);
}

TargetConn *
dfe_tc_create(MemoryContext cxt, const char *name, const char *conninfo)
{
	TargetConn *tc = MemoryContextAllocZero(cxt, sizeof(TargetConn));
	MemoryContextCallback *cb;
	const char *host;
	const char *hostaddr;

	tc->cxt = cxt;
	tc->name = MemoryContextStrdup(cxt, name);
	parse_conninfo(tc, conninfo);
	host = get_kw(tc, "host");
	hostaddr = get_kw(tc, "hostaddr");
	if ((host && strchr(host, ',')) || (hostaddr && strchr(hostaddr, ',')))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the connection string of target \"%s\" names more than one host", tc->name),
				 errhint("Register one target per server; an Azure HA server has one name for both nodes.")));
	/* a name (not an address, not a socket directory) without hostaddr is looked up here */
	if (host && *host && !hostaddr && host[0] != '/' && host[0] != '@' && !is_address(host))
		tc->host = MemoryContextStrdup(cxt, host);
	add_session_options(tc);
	tc->state = TC_IDLE;
	cb = MemoryContextAlloc(cxt, sizeof(MemoryContextCallback));
	cb->func = tc_reset_callback;
	cb->arg = tc;
	MemoryContextRegisterResetCallback(cxt, cb);
	return tc;
}

/*
 * Gives back the last query's copies and error.  cxt lives as long as the
 * connection (the guard's, for days): kept, one query's copies per check
 * would pile up without bound.  Freed chunks go back to cxt's free lists,
 * so the next query's copies of the same sizes reuse them.
 */
static void
free_query(TargetConn *tc)
{
	int			i;

	if (tc->result)
		PQclear(tc->result);
	tc->result = NULL;
	if (tc->error)
		pfree(tc->error);
	tc->error = NULL;
	if (tc->sql)
		pfree(tc->sql);
	tc->sql = NULL;
	for (i = 0; tc->params && i < tc->nparams; i++)
		if (tc->params[i])
			pfree(tc->params[i]);
	if (tc->params)
		pfree(tc->params);
	tc->params = NULL;
	tc->nparams = 0;
}

void
dfe_tc_submit(TargetConn *tc, const char *sql, int nparams, const char *const *params,
		  TimestampTz deadline)
{
	int			i;

	free_query(tc);
	tc->errcode = 0;
	tc->timed_out = false;
	tc->sql = MemoryContextStrdup(tc->cxt, sql);
	tc->nparams = nparams;
	tc->params = MemoryContextAllocZero(tc->cxt, sizeof(char *) * Max(nparams, 1));
	for (i = 0; i < nparams; i++)
		tc->params[i] = params[i] ? MemoryContextStrdup(tc->cxt, params[i]) : NULL;
	tc->deadline = deadline;
	tc->submitted_at = GetCurrentTimestamp();
	tc->finished_at = 0;
	tc->sent = false;
	tc->ready = true;
	tc->reused = false;
	if (tc->conn && PQstatus(tc->conn) == CONNECTION_OK)
	{
		tc->state = TC_SENDING;
		tc->reused = true;
	}
	else
	{
		drop_connection(tc);
		tc->state = (tc->host && (tc->addr[0] == '\0' ||
								  TimestampDifferenceExceeds(tc->resolved_at, GetCurrentTimestamp(),
															 DNS_TTL_S * 1000)))
			? TC_RESOLVING : TC_CONNECTING;
	}
}

/* ---- host name lookup ---- */

static void
start_lookup(TargetConn *tc)
{
	size_t		len = strlen(tc->host);
	DnsLookup  *l = calloc(1, offsetof(DnsLookup, name) + len + 1);
	struct gaicb *list[1];
	int			rc;

	if (!l)
	{
		fail(tc, ERRCODE_OUT_OF_MEMORY, true, "out of memory looking up \"%s\"", tc->host);
		return;
	}
	memcpy(l->name, tc->host, len + 1);
	l->hints.ai_family = AF_UNSPEC;
	l->hints.ai_socktype = SOCK_STREAM;
	l->cb.ar_name = l->name;
	l->cb.ar_request = &l->hints;
	list[0] = &l->cb;
	rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
	if (rc != 0)
	{
		free(l);
		fail(tc, ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, true,
			 "could not look up host name \"%s\": %s", tc->host, gai_strerror(rc));
		return;
	}
	tc->lookup = l;
}

/*
 * Every address of the name (up to MAX_ADDRS, in getaddrinfo's order),
 * comma-separated: libpq tries them in turn, as it would have tried the
 * addresses it resolved itself ("localhost" may be ::1 and 127.0.0.1).
 */
static int
join_addresses(TargetConn *tc, struct addrinfo *ai)
{
	int			n = 0;
	char		one[INET6_ADDRSTRLEN];
	StringInfoData hosts;

	tc->addr[0] = '\0';
	initStringInfo(&hosts);
	for (; ai && n < MAX_ADDRS; ai = ai->ai_next)
	{
		if (getnameinfo(ai->ai_addr, ai->ai_addrlen, one, sizeof(one), NULL, 0, NI_NUMERICHOST) != 0)
			continue;
		if (n > 0)
		{
			strlcat(tc->addr, ",", sizeof(tc->addr));
			appendStringInfoChar(&hosts, ',');
		}
		strlcat(tc->addr, one, sizeof(tc->addr));
		appendStringInfoString(&hosts, tc->host);
		n++;
	}
	if (tc->hosts)
		pfree(tc->hosts);		/* looked up again every DNS_TTL_S */
	tc->hosts = MemoryContextStrdup(tc->cxt, hosts.data);
	pfree(hosts.data);
	return n;
}

/* true once the lookup has finished (state moved on) */
static bool
poll_lookup(TargetConn *tc)
{
	DnsLookup  *l = tc->lookup;
	int			rc = gai_error(&l->cb);
	int			n;

	if (rc == EAI_INPROGRESS)
		return false;
	tc->lookup = NULL;
	n = (rc == 0) ? join_addresses(tc, l->cb.ar_result) : 0;
	free_lookup(l);
	if (n == 0)
	{
		tc->addr[0] = '\0';
		fail(tc, ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, true,
			 "could not resolve host name \"%s\": %s", tc->host,
			 rc ? gai_strerror(rc) : "no address");
		return true;
	}
	tc->resolved_at = GetCurrentTimestamp();
	tc->state = TC_CONNECTING;
	tc->ready = true;
	return true;
}

/* ---- connect ---- */

/*
 * NULL when the passfile setting is usable (or unset), else why not: libpq
 * silently ignores a passfile that group or others may read
 * (https://www.postgresql.org/docs/current/libpq-pgpass.html), which would
 * surface as a baffling authentication failure.
 */
const char *
dfe_tc_passfile_problem(void)
{
	struct stat st;
	static char buf[256];

	if (!dfe_passfile || !*dfe_passfile)
		return NULL;
	if (stat(dfe_passfile, &st) != 0)
	{
		snprintf(buf, sizeof(buf), "dfe_airbyte.passfile \"%s\" cannot be read: %m", dfe_passfile);
		return buf;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		snprintf(buf, sizeof(buf),
				 "dfe_airbyte.passfile \"%s\" is not a plain file of mode 0600 (it has %04o), so libpq would ignore it",
				 dfe_passfile, (unsigned) (st.st_mode & 07777));
		return buf;
	}
	return NULL;
}

static void
start_connect(TargetConn *tc)
{
	const char *kw[MAX_KEYWORDS];
	const char *val[MAX_KEYWORDS];
	const char *problem = dfe_tc_passfile_problem();
	int			n = tc->nkw;

	if (problem)
	{
		fail(tc, ERRCODE_CONFIG_FILE_ERROR, true, "%s", problem);
		return;
	}
	memcpy(kw, tc->keywords, sizeof(char *) * n);
	memcpy(val, tc->values, sizeof(char *) * n);
	if (tc->host)
	{
		int			i;

		for (i = 0; i < n; i++)
			if (strcmp(kw[i], "host") == 0)
				val[i] = tc->hosts;
		kw[n] = "hostaddr";
		val[n++] = tc->addr;
	}
	if (dfe_passfile && *dfe_passfile)
	{
		kw[n] = "passfile";
		val[n++] = dfe_passfile;
	}
	kw[n] = NULL;
	val[n] = NULL;
	if (!AcquireExternalFD())
	{
		fail(tc, ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, false,
			 "could not connect to target \"%s\": too many open files (raise max_files_per_process)", tc->name);
		return;
	}
	tc->fd_reserved = true;
	tc->conn = PQconnectStartParams(kw, val, false);
	if (!tc->conn || PQstatus(tc->conn) == CONNECTION_BAD || PQsetnonblocking(tc->conn, 1) != 0)
	{
		fail(tc, ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, true, "%s",
			 tc->conn ? PQerrorMessage(tc->conn) : "out of memory");
		return;
	}
	/* libpq's documentation: start as if PQconnectPoll had returned PGRES_POLLING_WRITING */
	tc->want = WL_SOCKET_WRITEABLE;
	tc->ready = false;
}

static void
poll_connect(TargetConn *tc)
{
	switch (PQconnectPoll(tc->conn))
	{
		case PGRES_POLLING_READING:
			tc->want = WL_SOCKET_READABLE;
			break;
		case PGRES_POLLING_WRITING:
			tc->want = WL_SOCKET_WRITEABLE;
			break;
		case PGRES_POLLING_OK:
			tc->state = TC_SENDING;
			tc->ready = true;
			break;
		default:
			fail(tc, ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION, true, "%s",
				 PQerrorMessage(tc->conn));
			break;
	}
}

/* ---- query ---- */

static void
send_or_flush(TargetConn *tc)
{
	int			r;

	if (!tc->sent)
	{
		if (!PQsendQueryParams(tc->conn, tc->sql, tc->nparams, NULL,
							   (const char *const *) tc->params, NULL, NULL, 0))
		{
			fail(tc, ERRCODE_CONNECTION_FAILURE, true, "%s", PQerrorMessage(tc->conn));
			return;
		}
		tc->sent = true;
	}
	r = PQflush(tc->conn);
	if (r < 0)
		fail(tc, ERRCODE_CONNECTION_FAILURE, true, "%s", PQerrorMessage(tc->conn));
	else if (r > 0)
		tc->want = WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE;
	else
	{
		tc->state = TC_BUSY;
		tc->want = WL_SOCKET_READABLE;
	}
}

/* Keeps the first error, else the last result (several statements: the last one's rows). */
static void
collect(TargetConn *tc, PGresult *res)
{
	if (tc->result && PQresultStatus(tc->result) == PGRES_FATAL_ERROR)
	{
		PQclear(res);
		return;
	}
	if (tc->result)
		PQclear(tc->result);
	tc->result = res;
}

static void
receive(TargetConn *tc)
{
	if (!PQconsumeInput(tc->conn))
	{
		fail(tc, ERRCODE_CONNECTION_FAILURE, true, "%s", PQerrorMessage(tc->conn));
		return;
	}
	while (!PQisBusy(tc->conn))
	{
		PGresult   *res = PQgetResult(tc->conn);

		if (!res)
			break;
		collect(tc, res);
	}
	if (PQisBusy(tc->conn))
		return;
	if (!tc->result)
		fail(tc, ERRCODE_CONNECTION_FAILURE, true, "no answer from target \"%s\"", tc->name);
	else if (PQresultStatus(tc->result) == PGRES_FATAL_ERROR ||
			 PQresultStatus(tc->result) == PGRES_BAD_RESPONSE)
	{
		const char *state = PQresultErrorField(tc->result, PG_DIAG_SQLSTATE);

		fail(tc, state && strlen(state) == 5
			 ? MAKE_SQLSTATE(state[0], state[1], state[2], state[3], state[4])
			 : ERRCODE_CONNECTION_FAILURE,
			 PQstatus(tc->conn) != CONNECTION_OK, "%s",
			 PQresultErrorField(tc->result, PG_DIAG_MESSAGE_PRIMARY)
			 ? PQresultErrorField(tc->result, PG_DIAG_MESSAGE_PRIMARY)
			 : PQerrorMessage(tc->conn));
	}
	else
		finish(tc, TC_DONE);
}

/* ---- the loop ---- */

static bool
in_flight(TargetConn *tc)
{
	return tc->state != TC_IDLE && tc->state != TC_DONE && tc->state != TC_FAILED;
}

/* Advances tc as far as it can go without waiting; sock_ready: its socket fired. */
static void
step(TargetConn *tc, bool sock_ready)
{
	tc->ready = false;
	switch (tc->state)
	{
		case TC_RESOLVING:
			if (!tc->lookup)
				start_lookup(tc);
			else
				(void) poll_lookup(tc);
			break;
		case TC_CONNECTING:
			if (!tc->conn)
				start_connect(tc);
			else if (sock_ready)
				poll_connect(tc);
			break;
		case TC_SENDING:
			if (!tc->sent || sock_ready)
				send_or_flush(tc);
			/* a flush that needs the socket writable may also have input to read */
			if (tc->state == TC_SENDING && sock_ready && tc->sent)
				(void) PQconsumeInput(tc->conn);
			break;
		case TC_BUSY:
			if (sock_ready)
				receive(tc);
			break;
		default:
			break;
	}
}

static void
expire(TargetConn *tc)
{
	const char *stage = tc->state == TC_RESOLVING ? "looking up its host name"
		: tc->state == TC_CONNECTING ? "connecting"
		: "waiting for the answer";

	/*
	 * No cancel request: PQcancel() connects synchronously, and the
	 * non-blocking PQcancelCreate() exists only from libpq 17.  Closing the
	 * connection is enough, because the session's statement_timeout ends
	 * the query on the server.  Past the deadline there is no retry.
	 */
	tc->reused = false;
	fail(tc, ERRCODE_CONNECTION_FAILURE, true, "target \"%s\" did not answer within %d ms (%s)",
		 tc->name, dfe_target_timeout_ms, stage);
	tc->timed_out = true;
}

/*
 * One pass: expire what passed its deadline, advance what can go on, and
 * return the wait needed (ms) — 0 when something can go on at once, -1 when
 * nothing is in flight.
 */
static long
advance_all(TargetConn **conns, int n, bool *fired)
{
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = MAX_WAIT_MS;
	bool		any = false;
	int			i;

	for (i = 0; i < n; i++)
	{
		TargetConn *tc = conns[i];
		long		left;

		if (!in_flight(tc))
			continue;
		if (now >= tc->deadline)
		{
			expire(tc);
			continue;
		}
		if (tc->ready || fired[i] || tc->state == TC_RESOLVING)
			step(tc, fired[i]);
		fired[i] = false;
		if (!in_flight(tc))
			continue;
		any = true;
		left = (long) ((tc->deadline - now) / 1000) + 1;
		timeout = Min(timeout, left);
		if (tc->ready)
			timeout = 0;
		else if (tc->state == TC_RESOLVING)
			timeout = Min(timeout, DNS_POLL_MS);
	}
	return any ? timeout : -1;
}

/* how many of conns are in flight */
static int
count_in_flight(TargetConn **conns, int n)
{
	int			k = 0;
	int			i;

	for (i = 0; i < n; i++)
		if (in_flight(conns[i]))
			k++;
	return k;
}

/*
 * The loop of dfe_tc_run() and dfe_tc_run_some(): drives conns until none is in
 * flight or, with first_only, until fewer are than at the start.
 */
static int
run_loop(TargetConn **conns, int n, bool first_only)
{
	bool	   *fired = palloc0(sizeof(bool) * Max(n, 1));
	WaitEvent  *events = palloc(sizeof(WaitEvent) * (n + 2));
	int			at_start = count_in_flight(conns, n);
	bool		woken = false;

	reap_abandoned();
	for (;;)
	{
		WaitEventSet *set;
		long		timeout;
		int			nev;
		int			i;

		CHECK_FOR_INTERRUPTS();
		timeout = advance_all(conns, n, fired);
		if (timeout < 0)
			break;
		if (first_only && count_in_flight(conns, n) < at_start)
			break;
		if (timeout == 0)
			continue;

		/*
		 * Rebuilt each pass: PQconnectPoll may change the socket (another
		 * address, SSL then plain).  Nothing between create and free can
		 * raise an error except postmaster death, so the set never leaks.
		 */
#if PG_VERSION_NUM >= 170000
		/* PostgreSQL 17 tracks the set in a resource owner instead of a memory context */
		set = CreateWaitEventSet(CurrentResourceOwner, n + 2);
#else
		set = CreateWaitEventSet(CurrentMemoryContext, n + 2);
#endif
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		for (i = 0; i < n; i++)
			if (in_flight(conns[i]) && conns[i]->conn && conns[i]->want &&
				PQsocket(conns[i]->conn) >= 0)
				AddWaitEventToSet(set, conns[i]->want, PQsocket(conns[i]->conn), NULL,
								  (void *) (intptr_t) (i + 1));
		nev = WaitEventSetWait(set, timeout, events, n + 2, PG_WAIT_EXTENSION);
		FreeWaitEventSet(set);
		for (i = 0; i < nev; i++)
		{
			if (events[i].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				woken = true;
			}
			else if (events[i].user_data)
				fired[(intptr_t) events[i].user_data - 1] = true;
		}
	}
	pfree(fired);
	pfree(events);

	/*
	 * Hand a wake-up on, as dfe_sleep_ms() does: the latch was set for the
	 * worker (a deploy queued by the migration watch's own commit, a reload),
	 * not for these queries, and resetting it here alone would leave that
	 * work to the worker's next idle poll.
	 */
	if (woken)
		SetLatch(MyLatch);
	return count_in_flight(conns, n);
}

void
dfe_tc_run(TargetConn **conns, int n)
{
	(void) run_loop(conns, n, false);
}

int
dfe_tc_run_some(TargetConn **conns, int n)
{
	return run_loop(conns, n, true);
}

TargetConnState
dfe_tc_state(TargetConn *tc)
{
	return tc->state;
}

PGresult *
dfe_tc_result(TargetConn *tc)
{
	return tc->result;
}

const char *
dfe_tc_error(TargetConn *tc)
{
	return tc->error;
}

int
dfe_tc_errcode(TargetConn *tc)
{
	return tc->errcode;
}

bool
dfe_tc_timed_out(TargetConn *tc)
{
	return tc->timed_out;
}

int
dfe_tc_server_version(TargetConn *tc)
{
	return tc->conn && PQstatus(tc->conn) == CONNECTION_OK ? PQserverVersion(tc->conn) : 0;
}

/* milliseconds from dfe_tc_submit() to the answer or the failure */
double
dfe_tc_elapsed_ms(TargetConn *tc)
{
	if (!tc->finished_at)
		return -1;
	return (double) (tc->finished_at - tc->submitted_at) / 1000.0;
}
