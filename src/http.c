/*
 * http.c — libcurl behind the interface in http.h.
 *
 * All requests go through one curl multi loop (dfe_http_perform).  Between
 * libcurl's polls (at most POLL_MS each) we CHECK_FOR_INTERRUPTS(), so a
 * cancel, statement_timeout or SIGTERM ends a call within a fraction of a
 * second; PG_FINALLY then frees every easy handle and the multi handle.
 * Retries are scheduled inside the same loop: a request that got 429, 5xx
 * or a transport error is parked until its backoff expires and then added
 * to the multi handle again, so one slow table never holds up the others.
 */
#include "postgres.h"

#include "access/xact.h"

#include <math.h>
#include <time.h>

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "http.h"
#include "shared.h"
#include "settings.h"
#include "spi_xact.h"

/* longest single wait inside libcurl before we look at interrupts again */
#define POLL_MS 200
/* backoff never grows past this, whatever the retry count */
#define MAX_BACKOFF_MS 30000
/* a Retry-After longer than this is capped */
#define MAX_RETRY_AFTER_S 120
/* how much of an error body a message may quote */
#define MESSAGE_MAX 500

static List *secrets = NIL;		/* in TopMemoryContext */

pg_noreturn static void http_raise(const HttpRequest *req);

HttpRequest *
dfe_http_request_new(const char *what, const char *method, const char *url)
{
	HttpRequest *req = palloc0(sizeof(HttpRequest));

	req->what = what;
	req->method = method;
	req->url = url;
	req->response = makeStringInfo();
	req->retry_after_s = -1;
	return req;
}

void
dfe_http_set_json_body(HttpRequest *req, const char *json)
{
	req->body = json;
	req->content_type = "application/json";
}

bool
dfe_http_ok(const HttpRequest *req)
{
	return req->status >= 200 && req->status < 300;
}

/* ---------------------------------------------------------------------- */
/* secrets                                                                */
/* ---------------------------------------------------------------------- */

/*
 * Secrets are kept most-recently-registered last, at most MAX_SECRETS of
 * them: tokens are renewed every few minutes for as long as the worker runs,
 * and an expired token no longer needs hiding.  Registering a secret again
 * moves it to the end, so the client secret and the credential fields,
 * registered at every token fetch, are never the ones dropped.
 */
#define MAX_SECRETS 64

void
dfe_http_register_secret(const char *secret)
{
	MemoryContext old;
	ListCell   *lc;

	/* very short strings would redact ordinary words */
	if (secret == NULL || strlen(secret) < 6)
		return;
	foreach(lc, secrets)
	{
		char	   *known = lfirst(lc);

		if (strcmp(known, secret) == 0)
		{
			secrets = foreach_delete_current(secrets, lc);
			old = MemoryContextSwitchTo(TopMemoryContext);
			secrets = lappend(secrets, known);
			MemoryContextSwitchTo(old);
			return;
		}
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (list_length(secrets) >= MAX_SECRETS)
	{
		char	   *oldest = linitial(secrets);

		explicit_bzero(oldest, strlen(oldest));
		pfree(oldest);
		secrets = list_delete_first(secrets);
	}
	secrets = lappend(secrets, pstrdup(secret));
	MemoryContextSwitchTo(old);
}

char *
dfe_http_redact(const char *text)
{
	StringInfoData out;
	ListCell   *lc;
	char	   *current;

	if (text == NULL)
		return NULL;
	current = pstrdup(text);
	foreach(lc, secrets)
	{
		const char *secret = lfirst(lc);
		size_t		slen = strlen(secret);
		const char *p = current;
		const char *hit;

		if (strstr(current, secret) == NULL)
			continue;
		initStringInfo(&out);
		while ((hit = strstr(p, secret)) != NULL)
		{
			appendBinaryStringInfo(&out, p, hit - p);
			appendStringInfoString(&out, "[redacted]");
			p = hit + slen;
		}
		appendStringInfoString(&out, p);
		current = out.data;
	}
	return current;
}

char *
dfe_http_escape(const char *s)
{
	StringInfoData out;
	const unsigned char *p;

	initStringInfo(&out);
	for (p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
			*p == '.' || *p == '~')
			appendStringInfoChar(&out, *p);
		else
			appendStringInfo(&out, "%%%02X", *p);
	}
	return out.data;
}

/* ---------------------------------------------------------------------- */
/* libcurl callbacks                                                      */
/* ---------------------------------------------------------------------- */

/* dfe_airbyte.http_max_response_size in bytes */
static Size
http_max_response_bytes(void)
{
	return (Size) dfe_http_max_response_size_kb * 1024;
}

/*
 * libcurl calls write_body and read_header in the middle of
 * curl_multi_perform: they must not palloc or ereport, since an ERROR would
 * longjmp through libcurl and leave it in an undefined state
 * (https://curl.se/libcurl/c/CURLOPT_WRITEFUNCTION.html: the callback
 * returns a short count to stop the transfer).  The body goes into a
 * malloc'd buffer (req->rx) that take_body() copies into req->response once
 * libcurl has returned; cleanup_requests() frees it on every path.
 */
static size_t
write_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpRequest *req = userdata;
	size_t		len = size * nmemb;

	/*
	 * A body over dfe_airbyte.http_max_response_size is refused (libcurl
	 * then ends the transfer with CURLE_WRITE_ERROR): a misbehaving server
	 * must not fill the backend's memory.  http_raise() says so.
	 */
	if (req->rx_len + len > http_max_response_bytes() ||
		req->rx_len + len >= MaxAllocSize / 2)
	{
		req->too_large = true;
		return 0;
	}
	if (req->rx_len + len + 1 > req->rx_cap)
	{
		size_t		cap = Max(req->rx_cap * 2, req->rx_len + len + 1);
		char	   *grown;

		cap = Max(cap, 8192);
		grown = realloc(req->rx, cap);
		if (grown == NULL)
		{
			req->rx_oom = true;
			return 0;
		}
		req->rx = grown;
		req->rx_cap = cap;
	}
	memcpy(req->rx + req->rx_len, ptr, len);
	req->rx_len += len;
	return len;
}

/* the body received so far, out of libcurl's reach: into req->response */
static void
take_body(HttpRequest *req)
{
	resetStringInfo(req->response);
	if (req->rx_len > 0)
		appendBinaryStringInfo(req->response, req->rx, req->rx_len);
	free(req->rx);
	req->rx = NULL;
	req->rx_len = req->rx_cap = 0;
}

/* the value of header "name" in line, trimmed, without copying; NULL if another header */
static const char *
header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
	size_t		nlen = strlen(name);
	const char *v;
	const char *end = line + len;

	if (len <= nlen || pg_strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
		return NULL;
	v = line + nlen + 1;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	*vlen = end - v;
	return v;
}

static size_t
read_header(char *buffer, size_t size, size_t nitems, void *userdata)
{
	HttpRequest *req = userdata;
	size_t		len = size * nitems;
	const char *v;
	size_t		vlen;

	if ((v = header_value(buffer, len, "Retry-After", &vlen)) != NULL)
	{
		char		text[32];
		char	   *endp;
		double		secs;

		if (vlen == 0 || vlen >= sizeof(text))
			return len;			/* an HTTP date or garbage: backoff instead */
		memcpy(text, v, vlen);
		text[vlen] = '\0';
		secs = strtod(text, &endp);
		/* only the delta-seconds form; an HTTP date falls back to backoff */
		if (endp != text && *endp == '\0' && secs >= 0)
			req->retry_after_s = Min(secs, MAX_RETRY_AFTER_S);
	}
	else if ((v = header_value(buffer, len, "ETag", &vlen)) != NULL)
	{
		/* an etag too long to keep is dropped: the update then goes without If-Match */
		if (vlen < sizeof(req->etag_buf))
		{
			memcpy(req->etag_buf, v, vlen);
			req->etag_buf[vlen] = '\0';
		}
		else
			req->etag_buf[0] = '\0';
	}
	return len;
}

/* ---------------------------------------------------------------------- */
/* the multi loop                                                         */
/* ---------------------------------------------------------------------- */

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long) ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void
check_url(const HttpRequest *req)
{
	if (pg_strncasecmp(req->url, "http://", 7) != 0 &&
		pg_strncasecmp(req->url, "https://", 8) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: only http and https URLs are allowed", req->what),
				 errdetail("The URL does not start with http:// or https://."),
				 errhint("Check the dfe_airbyte URL settings and the credential configuration.")));
}

/*
 * Every curl_easy_* and curl_multi_* call that can fail goes through one of
 * these two (outside libcurl's callbacks, so raising is safe): a failure is
 * an ERROR naming the call, and PG_FINALLY in dfe_http_perform frees the
 * handles.
 */
static void
curl_easy_checked(CURLcode rc, const HttpRequest *req, const char *call)
{
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("%s: libcurl's %s failed: %s", req->what, call,
						curl_easy_strerror(rc)),
				 errhint("Check that libcurl supports http and https on this server.")));
}

static void
curl_multi_checked(CURLMcode rc, const char *call)
{
	if (rc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("HTTP transfer failed: libcurl's %s: %s", call, curl_multi_strerror(rc)),
				 errhint("This is a libcurl problem on the database server; try again.")));
}

#define SETOPT(easy, opt, val) \
	curl_easy_checked(curl_easy_setopt((easy), (opt), (val)), req, "curl_easy_setopt(" #opt ")")

/* forget what the previous attempt received */
static void
reset_attempt_state(HttpRequest *req)
{
	resetStringInfo(req->response);
	free(req->rx);
	req->rx = NULL;
	req->rx_len = req->rx_cap = 0;
	req->rx_oom = false;
	req->etag = NULL;
	req->etag_buf[0] = '\0';
	req->retry_after_s = -1;
	req->errbuf[0] = '\0';
	req->too_large = false;
}

/* TLS, timeouts, size cap, callbacks and method of one attempt */
static void
set_transfer_options(HttpRequest *req, CURL *easy)
{
	static char user_agent[64];

	snprintf(user_agent, sizeof(user_agent), "dfe_airbyte/%s (PostgreSQL %s)",
			 DFE_AIRBYTE_VERSION, PG_MAJORVERSION);

	SETOPT(easy, CURLOPT_URL, req->url);
	SETOPT(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(easy, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (dfe_http_ca_file && dfe_http_ca_file[0])
		SETOPT(easy, CURLOPT_CAINFO, dfe_http_ca_file);
	SETOPT(easy, CURLOPT_NOSIGNAL, 1L);
	SETOPT(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) dfe_http_connect_timeout_s * 1000L);
	SETOPT(easy, CURLOPT_TIMEOUT_MS, (long) dfe_http_timeout_s * 1000L);
	SETOPT(easy, CURLOPT_USERAGENT, user_agent);
	/* a declared Content-Length over the cap fails before the body comes */
	SETOPT(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) http_max_response_bytes());
	SETOPT(easy, CURLOPT_WRITEFUNCTION, write_body);
	SETOPT(easy, CURLOPT_WRITEDATA, req);
	SETOPT(easy, CURLOPT_HEADERFUNCTION, read_header);
	SETOPT(easy, CURLOPT_HEADERDATA, req);
	SETOPT(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	SETOPT(easy, CURLOPT_PRIVATE, req);

	if (strcmp(req->method, "GET") == 0)
		SETOPT(easy, CURLOPT_HTTPGET, 1L);
	else
	{
		SETOPT(easy, CURLOPT_CUSTOMREQUEST, req->method);
		SETOPT(easy, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		SETOPT(easy, CURLOPT_POSTFIELDSIZE, (long) (req->body ? strlen(req->body) : 0));
	}
}

/* the request headers; curl_slist_append copies, the list is freed before the next attempt */
static void
set_headers(HttpRequest *req, CURL *easy)
{
	ListCell   *lc;

	req->header_list = curl_slist_append(req->header_list, "Accept: application/json");
	/* libcurl would otherwise send "Expect: 100-continue" and wait for it */
	req->header_list = curl_slist_append(req->header_list, "Expect:");
	if (req->content_type)
		req->header_list = curl_slist_append(req->header_list,
											 psprintf("Content-Type: %s", req->content_type));
	if (req->bearer)
	{
		char	   *auth = psprintf("Authorization: Bearer %s", req->bearer);

		req->header_list = curl_slist_append(req->header_list, auth);
		/* do not leave the token lying around in palloc'd memory */
		explicit_bzero(auth, strlen(auth));
		pfree(auth);
	}
	foreach(lc, req->headers)
		req->header_list = curl_slist_append(req->header_list, (char *) lfirst(lc));
	SETOPT(easy, CURLOPT_HTTPHEADER, req->header_list);
}

/* (re)build the easy handle for the next attempt */
static CURL *
prepare_attempt(HttpRequest *req)
{
	if (req->header_list)
	{
		curl_slist_free_all(req->header_list);
		req->header_list = NULL;
	}
	if (req->easy == NULL)
	{
		req->easy = curl_easy_init();
		if (req->easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("%s: could not create an HTTP handle", req->what),
					 errhint("The server may be out of memory.")));
	}
	else
		curl_easy_reset(req->easy);

	reset_attempt_state(req);
	set_transfer_options(req, req->easy);
	set_headers(req, req->easy);
	req->attempts++;
	return req->easy;
}

/* a 4xx that the caller's classifier calls transient (see retry_4xx in http.h) */
static bool
retryable_4xx(const HttpRequest *req)
{
	return req->retry_4xx != NULL && req->status >= 400 && req->status < 500 &&
		req->retry_4xx(req);
}

static bool
retryable(const HttpRequest *req, CURLcode rc)
{
	if (req->no_retry)
		return false;
	if (rc != CURLE_OK)
	{
		switch (rc)
		{
				/* configuration problems: retrying cannot help */
			case CURLE_UNSUPPORTED_PROTOCOL:
			case CURLE_URL_MALFORMAT:
			case CURLE_PEER_FAILED_VERIFICATION:
			case CURLE_SSL_CACERT_BADFILE:
			case CURLE_SSL_CERTPROBLEM:
			case CURLE_SSL_CIPHER:
			case CURLE_SSL_ISSUER_ERROR:
			case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
			case CURLE_WRITE_ERROR:
			case CURLE_FILESIZE_EXCEEDED:
			case CURLE_OUT_OF_MEMORY:
				return false;
			default:
				return true;
		}
	}
	if (req->status >= 500 && req->final_5xx != NULL && req->final_5xx(req))
		return false;
	if (req->status == 429 || req->status >= 500)
		return true;
	return retryable_4xx(req);
}

/* milliseconds to wait before the next attempt */
static long
backoff_ms(const HttpRequest *req)
{
	double		base;
	double		ms;

	if (req->retry_after_s >= 0)
		return (long) (req->retry_after_s * 1000.0);
	base = (double) dfe_http_retry_base_ms * pow(2.0, req->attempts - 1);
	if (base > MAX_BACKOFF_MS)
		base = MAX_BACKOFF_MS;
	/* "equal jitter": half fixed, half random, so retries spread out */
	ms = base / 2.0 + pg_prng_double(&pg_global_prng_state) * base / 2.0;
	return (long) ms;
}

static void
cleanup_requests(CURLM *multi, HttpRequest **reqs, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		HttpRequest *req = reqs[i];

		if (req->easy)
		{
			if (multi)
				curl_multi_remove_handle(multi, req->easy);
			curl_easy_cleanup(req->easy);
			req->easy = NULL;
		}
		if (req->header_list)
		{
			curl_slist_free_all(req->header_list);
			req->header_list = NULL;
		}
		/* a body still in libcurl's buffer (an ERROR mid-transfer) */
		free(req->rx);
		req->rx = NULL;
		req->rx_len = req->rx_cap = 0;
	}
	if (multi)
		curl_multi_cleanup(multi);
}

/*
 * libcurl's global state, set up once per process on first use, so that a
 * process that never calls out (the guard worker) never initialises it.
 * curl_global_init is not thread safe; we are single-threaded.
 */
static void
http_global_init(void)
{
	static bool done = false;

	if (done)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialise libcurl"),
				 errhint("Check that libcurl and its TLS library are installed correctly.")));
	done = true;
}

/*
 * The slot guard must react whatever Airbyte, Google or DNS do (README.md,
 * "The slot guard"), so
 * its process never calls out: a request made there is a bug, refused
 * before libcurl (or a DNS lookup) is ever reached.
 */
static void
refuse_in_guard(const HttpRequest *req)
{
	if (dfe_process_is_guard)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("dfe_airbyte: the slot guard worker may not call out (%s)", req->what),
				 errhint("This is a bug in dfe_airbyte: network calls belong in the network worker; report it.")));
}

/* the state of one dfe_http_perform() call's multi loop */
typedef struct MultiLoop
{
	CURLM	   *multi;
	HttpRequest **reqs;
	int			n;
	int			limit;			/* most transfers at once */
	int			next_new;		/* requests not started yet, in order */
	int			running;		/* handles in the multi handle */
	int			unfinished;		/* requests without their final answer */
	bool	   *parked;			/* waiting for their backoff to expire */
} MultiLoop;

static void
start_transfer(MultiLoop *loop, HttpRequest *req)
{
	curl_multi_checked(curl_multi_add_handle(loop->multi, prepare_attempt(req)),
					   "curl_multi_add_handle");
	loop->running++;
}

/* start parked retries whose time has come, then new requests */
static void
start_due_transfers(MultiLoop *loop)
{
	long		now = now_ms();
	int			i;

	for (i = 0; i < loop->n && loop->running < loop->limit; i++)
	{
		if (loop->parked[i] && loop->reqs[i]->next_attempt_at_ms <= now)
		{
			loop->parked[i] = false;
			start_transfer(loop, loop->reqs[i]);
		}
	}
	while (loop->next_new < loop->n && loop->running < loop->limit)
		start_transfer(loop, loop->reqs[loop->next_new++]);
}

/* the outcome of a finished transfer: its HTTP status or its transport error */
static void
record_outcome(HttpRequest *req, CURL *easy, CURLcode rc)
{
	take_body(req);
	req->etag = req->etag_buf[0] ? req->etag_buf : NULL;

	if (rc == CURLE_OK)
	{
		curl_easy_checked(curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status),
						  req, "curl_easy_getinfo");
		req->transport_error = NULL;
		return;
	}
	req->status = 0;
	req->transport_code = (int) rc;
	if (rc == CURLE_FILESIZE_EXCEEDED)
		req->too_large = true;
	if (req->too_large)
		req->transport_error = psprintf("the response is larger than dfe_airbyte.http_max_response_size (%d kB)",
										dfe_http_max_response_size_kb);
	else if (req->rx_oom)
		req->transport_error = pstrdup("out of memory while receiving the response");
	else
		req->transport_error = pstrdup(req->errbuf[0] ? req->errbuf : curl_easy_strerror(rc));
}

/* a transfer libcurl reports done: its request gets its answer or is parked for a retry */
static void
finish_transfer(MultiLoop *loop, CURLMsg *msg)
{
	HttpRequest *req = NULL;
	CURLcode	rc = msg->data.result;
	int			idx;

	if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req) != CURLE_OK ||
		req == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("HTTP transfer failed: libcurl lost track of a request"),
				 errhint("This is a libcurl problem on the database server; try again.")));
	curl_multi_checked(curl_multi_remove_handle(loop->multi, msg->easy_handle),
					   "curl_multi_remove_handle");
	loop->running--;
	record_outcome(req, msg->easy_handle, rc);

	if (retryable(req, rc) && req->attempts <= dfe_http_max_retries)
	{
		long		delay = backoff_ms(req);

		for (idx = 0; idx < loop->n && loop->reqs[idx] != req; idx++)
			;
		req->next_attempt_at_ms = now_ms() + delay;
		loop->parked[idx] = true;
		ereport(DEBUG1,
				(errmsg_internal("dfe_airbyte: %s: attempt %d got %s, retrying in %ld ms",
								 req->what, req->attempts,
								 rc == CURLE_OK ? psprintf("HTTP %ld", req->status)
								 : req->transport_error, delay)));
	}
	else
		loop->unfinished--;
}

/* sleep until there is socket activity, a retry is due, or POLL_MS has passed */
static void
wait_for_activity(MultiLoop *loop)
{
	long		now = now_ms();
	long		wait_ms = POLL_MS;
	int			i;

	for (i = 0; i < loop->n; i++)
	{
		if (loop->parked[i])
		{
			long		due = loop->reqs[i]->next_attempt_at_ms - now;

			if (due < wait_ms)
				wait_ms = due < 0 ? 0 : due;
		}
	}
	if (loop->running > 0)
		curl_multi_checked(curl_multi_poll(loop->multi, NULL, 0, (int) wait_ms, NULL),
						   "curl_multi_poll");
	else if (wait_ms > 0)
		pg_usleep(wait_ms * 1000L);
}

/* the multi loop: runs until every request has its final answer */
static void
run_multi_loop(MultiLoop *loop)
{
	while (loop->unfinished > 0)
	{
		int			still_running;
		CURLMsg    *msg;
		int			msgs_left;

		CHECK_FOR_INTERRUPTS();
		start_due_transfers(loop);
		curl_multi_checked(curl_multi_perform(loop->multi, &still_running), "curl_multi_perform");
		while ((msg = curl_multi_info_read(loop->multi, &msgs_left)) != NULL)
		{
			if (msg->msg == CURLMSG_DONE)
				finish_transfer(loop, msg);
		}
		if (loop->unfinished == 0)
			break;
		/* a slot is free and requests wait for one: start them right away */
		if (loop->running < loop->limit && loop->next_new < loop->n)
			continue;
		wait_for_activity(loop);
	}
}

void
dfe_http_perform(HttpRequest **reqs, int n, int concurrency)
{
	MultiLoop	loop = {0};
	CURLM	   *volatile multi = NULL;
	int			i;

	if (n <= 0)
		return;
	refuse_in_guard(reqs[0]);
	http_global_init();

	for (i = 0; i < n; i++)
	{
		check_url(reqs[i]);
		reqs[i]->status = 0;
		reqs[i]->transport_error = NULL;
		reqs[i]->transport_code = CURLE_OK;
		reqs[i]->attempts = 0;
		reqs[i]->next_attempt_at_ms = 0;
	}
	loop.reqs = reqs;
	loop.n = n;
	loop.unfinished = n;
	loop.limit = (concurrency <= 0 || concurrency > n) ? n : concurrency;
	loop.parked = palloc0(sizeof(bool) * n);

	PG_TRY();
	{
		multi = curl_multi_init();
		if (multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create an HTTP multi handle"),
					 errhint("The server may be out of memory.")));
		loop.multi = multi;
		run_multi_loop(&loop);
	}
	PG_FINALLY();
	{
		cleanup_requests(multi, reqs, n);
	}
	PG_END_TRY();
	pfree(loop.parked);
}

void
dfe_http_perform_one(HttpRequest *req)
{
	dfe_http_perform(&req, 1, 1);
}

/* ---------------------------------------------------------------------- */
/* errors                                                                 */
/* ---------------------------------------------------------------------- */

static char *
json_string_at(cJSON *obj, const char *key)
{
	cJSON	   *item = cJSON_GetObjectItemCaseSensitive(obj, key);

	return cJSON_IsString(item) && item->valuestring[0] ? item->valuestring : NULL;
}

char *
dfe_http_server_message(const HttpRequest *req)
{
	const char *body = req->response ? req->response->data : "";
	char	   *msg = NULL;
	cJSON	   *root;

	if (req->status == 0)
		return dfe_http_redact(req->transport_error ? req->transport_error : "no response");

	root = cJSON_Parse(body);
	if (root && cJSON_IsObject(root))
	{
		cJSON	   *err = cJSON_GetObjectItemCaseSensitive(root, "error");

		cJSON	   *data = cJSON_GetObjectItemCaseSensitive(root, "data");

		if (cJSON_IsObject(err))	/* Google: {"error": {"message": ...}} */
			msg = json_string_at(err, "message");

		/*
		 * Airbyte's public API answers problem bodies whose "detail" is a
		 * fixed sentence per problem type ("The request could not be
		 * understood by the server due to malformed syntax."); the specific
		 * text is in data.message (airbyte-platform api-problems.yaml,
		 * AbstractThrowableProblemHandler).  The config API answers
		 * {"message"}.  So: data.message, then detail, then message.
		 */
		if (!msg && cJSON_IsObject(data))
			msg = json_string_at(data, "message");
		if (!msg)
			msg = json_string_at(root, "detail");
		if (!msg)
			msg = json_string_at(root, "message");
		if (!msg)
			msg = json_string_at(root, "error_description");	/* OAuth */
		if (!msg && cJSON_IsString(err))
			msg = err->valuestring;
		if (msg)
			msg = pstrdup(msg);
	}
	if (root)
		cJSON_Delete(root);
	if (!msg)
	{
		if (body[0] == '\0')
			msg = pstrdup("(empty body)");
		else
			msg = pnstrdup(body, MESSAGE_MAX);
	}
	else if (strlen(msg) > MESSAGE_MAX)
		msg[MESSAGE_MAX] = '\0';
	return dfe_http_redact(msg);
}

static void
http_raise(const HttpRequest *req)
{
	char	   *message = dfe_http_server_message(req);
	const char *hint;

	if (req->status == 0 && req->too_large)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s failed: %s", req->what, message),
				 errdetail("%s %s; the transfer was stopped.", req->method, dfe_http_redact(req->url)),
				 errhint("Raise dfe_airbyte.http_max_response_size (ALTER SYSTEM SET dfe_airbyte.http_max_response_size = '256MB'; SELECT pg_reload_conf();) if the answer is legitimately this large, e.g. the discovered catalog of a very large schema.")));

	if (req->status == 0)
	{
		switch (req->transport_code)
		{
			case CURLE_PEER_FAILED_VERIFICATION:
			case CURLE_SSL_ISSUER_ERROR:
				/* TLS is never turned off: say how to trust a private CA */
				hint = "The server's TLS certificate is not trusted, or is not issued for the host name in the URL. "
					"TLS is always verified: if the service uses a private CA, set dfe_airbyte.http_ca_file "
					"to its PEM bundle and reload; otherwise check the host name in the URL setting.";
				break;
			case CURLE_SSL_CACERT_BADFILE:
				hint = "dfe_airbyte.http_ca_file could not be read as a CA bundle: check that the file exists, "
					"is readable by the database server and holds PEM certificates.";
				break;
			default:
				hint = "Check that the service is reachable from the database server, "
					"its URL setting, and dfe_airbyte.http_timeout.";
				break;
		}
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("%s failed: %s", req->what, message),
				 errdetail("%s %s; %d attempt(s), no HTTP answer.", req->method,
						   dfe_http_redact(req->url), req->attempts),
				 errhint("%s", hint)));
	}

	switch (req->status)
	{
		case 400:
		case 422:
			hint = "The service rejected the request; its message above says why.";
			break;
		case 401:
			hint = "Check the client id and secret (or the credential configuration).";
			break;
		case 403:
			hint = "The credentials work but lack permission for this call.";
			break;
		case 404:
			hint = "Check the ids in the dfe_airbyte settings (connection, source, project, dataset).";
			break;
		case 409:
			hint = "Another operation is in progress; try again later.";
			break;
		case 429:
			hint = "The service is rate limiting; try again later or raise dfe_airbyte.http_max_retries.";
			break;
		default:
			hint = req->status >= 500
				? "The service is failing; it was retried with backoff. Try again later."
				: "Check the request settings.";
			break;
	}
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("%s failed: HTTP %ld", req->what, req->status),
			 errdetail("%s %s answered: %s", req->method, dfe_http_redact(req->url), message),
			 errhint("%s", hint)));
	pg_unreachable();
}

bool
dfe_http_never_sent(const HttpRequest *req)
{
	if (req->status != 0)
		return false;
	switch (req->transport_code)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_CONNECT:
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
			return true;
		default:
			return false;
	}
}

void
dfe_http_check(const HttpRequest *req)
{
	if (!dfe_http_ok(req))
		http_raise(req);
}

/*
 * Run fn(arg) outside a transaction; an ERROR it raises becomes its message
 * (with the detail, secrets redacted), copied into cxt; NULL when fn
 * succeeded.  The network worker's tasks use it so that one failing call
 * (Airbyte down, a bad setting) neither stops the task nor the worker.
 */
char *
dfe_http_try(void (*fn) (void *), void *arg, MemoryContext cxt)
{
	ErrorData  *edata;
	char	   *result;

	if (dfe_catch(fn, arg, 0, cxt, &edata))
		return NULL;
	result = dfe_http_redact(dfe_error_text(edata));
	FreeErrorData(edata);
	return result;
}
