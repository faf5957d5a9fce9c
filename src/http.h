/*
 * http.h — the one HTTP layer every outside call goes through (libcurl).
 *
 * - http and https only; TLS always verified (dfe_airbyte.http_ca_file may
 *   add a private CA bundle); no redirects; a User-Agent with our version.
 * - connect and total timeouts from dfe_airbyte.http_connect_timeout and
 *   dfe_airbyte.http_timeout (per attempt).
 * - 429, 5xx and transport errors are retried up to dfe_airbyte.http_max_retries
 *   times with exponential backoff and full jitter, honouring Retry-After.
 * - requests run concurrently through one curl multi handle; the wait loop
 *   checks for interrupts at least every 200 ms, so statement_timeout,
 *   pg_cancel_backend() and SIGTERM cut a call short.  libcurl handles are
 *   freed on every path (PG_FINALLY); bodies live in the caller's memory
 *   context.
 * - HTTP failures do NOT raise: they are reported in the request
 *   (status/transport_error) so that one failing table does not stop the
 *   others.  dfe_http_check() turns a failure into a clear ERROR that names the
 *   call, the status and the server's message, with secrets redacted.
 */
#ifndef DFE_AIRBYTE_HTTP_H
#define DFE_AIRBYTE_HTTP_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "compat.h"

typedef struct HttpRequest
{
	/* --- set by the caller (dfe_http_request_new fills the first three) --- */
	const char *what;			/* for messages, e.g. "Airbyte connection update" */
	const char *method;			/* GET, POST, PATCH, PUT, DELETE */
	const char *url;
	const char *body;			/* NULL: no body */
	const char *content_type;	/* e.g. "application/json"; NULL: none */
	const char *bearer;			/* NULL: no Authorization header */
	List	   *headers;		/* extra "Name: value" strings */
	bool		no_retry;		/* true: one attempt only (for POSTs that are
								 * not idempotent, e.g. Airbyte's refresh) */
	void	   *user_data;		/* free for the caller */

	/*
	 * Optional: for a 4xx answer other than 429, says whether it is transient
	 * all the same (BigQuery answers rate limits with 403 or 400 and a reason
	 * in the body).  true: retried with backoff like a 429.
	 */
	bool		(*retry_4xx) (const struct HttpRequest *req);

	/*
	 * Optional: for a 5xx answer, says that it is final all the same
	 * (BigQuery answers a query over maximumBytesBilled with HTTP 500 and
	 * reason bytesBilledLimitExceeded: asking again bills nothing and fails
	 * again).  true: not retried.
	 */
	bool		(*final_5xx) (const struct HttpRequest *req);

	/* --- results --- */
	long		status;			/* HTTP status; 0 when no response came */
	StringInfo	response;		/* response body (always allocated) */
	char	   *transport_error;	/* libcurl's error when status == 0 */
	char	   *etag;			/* ETag response header, or NULL */
	int			attempts;		/* attempts made */

	/* --- private to http.c --- */
	double		retry_after_s;	/* Retry-After of the last answer, -1 none */
	int			transport_code; /* libcurl's CURLcode when status == 0 */
	long		next_attempt_at_ms;
	void	   *easy;
	struct curl_slist *header_list;
	char		errbuf[256];
	bool		too_large;		/* body over dfe_airbyte.http_max_response_size */

	/*
	 * Filled by libcurl's callbacks, which must never palloc or ereport (an
	 * ERROR would longjmp through libcurl): the body goes into malloc'd
	 * memory and is copied into response once the transfer has ended.
	 */
	char	   *rx;
	size_t		rx_len;
	size_t		rx_cap;
	bool		rx_oom;			/* malloc failed: the transfer was stopped */
	char		etag_buf[256];
} HttpRequest;

/* a new request in CurrentMemoryContext */
extern HttpRequest *dfe_http_request_new(const char *what, const char *method,
									 const char *url);

/* body + "Content-Type: application/json" */
extern void dfe_http_set_json_body(HttpRequest *req, const char *json);

/*
 * Run the requests, at most concurrency at a time (<= 0: all at once),
 * retrying each as described above.  Returns when every request has its
 * final answer.  Raises only on interrupts (cancel, terminate), on a URL
 * that is not http(s), or when libcurl cannot be set up.
 */
extern void dfe_http_perform(HttpRequest **reqs, int n, int concurrency);

/* one request; same rules */
extern void dfe_http_perform_one(HttpRequest *req);

/*
 * true when the request certainly never reached the server (no name, no
 * connection, TLS handshake refused): for a POST that is not idempotent,
 * the only failures after which asking again is safe.  A timeout or a
 * reset after the request was sent is NOT such a failure.
 */
extern bool dfe_http_never_sent(const HttpRequest *req);

/* true when the request got a 2xx */
extern bool dfe_http_ok(const HttpRequest *req);

/*
 * ERROR unless the request got a 2xx.  The message names req->what and the
 * HTTP status (or the transport error), the detail carries the server's
 * message (dfe_http_server_message), the hint what to check.
 */
extern void dfe_http_check(const HttpRequest *req);

/*
 * The server's message from an error body: Airbyte's "data.message", then
 * "detail", then "message" (problem bodies carry a fixed "detail"),
 * Google's "error.message", OAuth's "error_description"/"error", else the
 * start of the body.  Secrets registered with dfe_http_register_secret() are
 * replaced by "[redacted]".  palloc'd.
 */
extern char *dfe_http_server_message(const HttpRequest *req);

/* remember a secret so that no message built here can ever show it */
extern void dfe_http_register_secret(const char *secret);
extern char *dfe_http_redact(const char *text);

/* percent-encode one URL component (palloc'd) */
extern char *dfe_http_escape(const char *s);

/* fn(arg) outside a transaction; an ERROR becomes its redacted text in cxt, NULL on success */
extern char *dfe_http_try(void (*fn) (void *), void *arg, MemoryContext cxt);

#endif
