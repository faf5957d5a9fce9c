"""BigQuery jobs.query / jobs.getQueryResults that really run the SQL.

The final tables live in a PostgreSQL database of the test (one schema per
BigQuery dataset, `proj.dataset.table` -> "dataset"."table"); each query is
parsed as GoogleSQL with sqlglot (Debian's python3-sqlglot), rewritten where
sqlglot's PostgreSQL output would not mean what BigQuery means, and run there.
A query that BigQuery would reject should therefore fail here too, and a
query that computes the wrong thing computes the wrong thing here.

The REST shapes follow Google's reference:
  jobs.query          https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/query
  jobs.getQueryResults https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/getQueryResults
  errors              https://cloud.google.com/bigquery/docs/error-messages
Rows come back as `rows[].f[].v`, every value a JSON string (NULL -> null).
A query runs in a thread, as a BigQuery job: jobs.query answers when it is
done or after its timeoutMs (default 10 s) with jobComplete false, and
getQueryResults waits up to its own timeoutMs the same way (config
bq_query_pending_polls adds that many jobComplete false answers first).

Rewrites (each follows the GoogleSQL function reference,
https://cloud.google.com/bigquery/docs/reference/standard-sql/functions-and-operators):
  MD5(STRING) -> BYTES           bq_fake.md5: decode(md5(x), 'hex') (bytea)
  TO_HEX(BYTES) -> STRING        bq_fake.to_hex: encode(x, 'hex'); no TO_HEX(STRING)
  CONCAT(STRING...)              bq_fake.str_arg(a) || ...: NULL if any argument
                                 is NULL (PostgreSQL's concat() skips NULLs);
                                 STRING only
  COUNTIF(BOOL)                  aggregate bq_fake.countif (0 on no rows)
  DIV(INT64, INT64)              bq_fake.div: truncates toward zero, error on 0
  CAST(x AS INT64)               bq_fake.int64: STRING accepts '0x' hex and
                                 decimal, overflow is an error; NUMERIC rounds
                                 half away from zero
  CAST(x AS STRING)              bq_fake.string: INT64, NUMERIC (no trailing
                                 zeros, as BigQuery prints it), BOOL
                                 ('true'/'false'), STRING; other types are not
                                 modelled and fail (format them explicitly)
  TIMESTAMP / DATETIME           timestamptz / timestamp (session zone UTC)
  FORMAT_TIMESTAMP/DATETIME/DATE  bq_fake.format_*: %Y %m %d %H %M %S %E<n>S
                                 %F %T %%; the wrong argument type is an error
  QUALIFY                        a subquery; like BigQuery's parser it needs a
                                 WHERE, GROUP BY or HAVING in the same SELECT
  `p.d.t`                        "d"."t"; an unqualified table is an error

Billing model (https://cloud.google.com/bigquery/pricing#on_demand_pricing,
"Data size calculation" in the data types reference): bytes processed = for
every referenced table, the logical size of the referenced columns over all
its rows (INT64/FLOAT64/TIMESTAMP/DATETIME/DATE/TIME 8, NUMERIC 16, BOOL 1,
STRING 2 + UTF-8 bytes, JSON its text, NULL 0); bytes billed = per table
rounded up to the MiB with a 10 MiB minimum, and at least 10 MiB per query.
A query whose bytes billed exceed maximumBytesBilled fails with HTTP 500
reason bytesBilledLimitExceeded and no rows (the shape Google's clients see).
"""

import itertools
import json
import threading
import time

try:
    import sqlglot
    from sqlglot import exp
except ImportError:  # the module still imports; queries then answer 501
    sqlglot = None
    exp = None

try:
    import psycopg2
except ImportError:
    psycopg2 = None

MIB = 1048576
MIN_BILLED = 10 * MIB

# The functions the rewrites call, installed once per database.
SUPPORT_SQL = r"""
CREATE SCHEMA IF NOT EXISTS bq_fake;
CREATE OR REPLACE FUNCTION bq_fake.md5(text) RETURNS bytea
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT decode(pg_catalog.md5($1), 'hex')$$;
CREATE OR REPLACE FUNCTION bq_fake.to_hex(bytea) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT encode($1, 'hex')$$;
CREATE OR REPLACE FUNCTION bq_fake.to_hex(text) RETURNS text
  LANGUAGE plpgsql AS $$BEGIN
  RAISE EXCEPTION 'No matching signature for function TO_HEX for argument types: STRING';
END$$;
-- CONCAT(a, b) becomes str_arg(a) || str_arg(b): || is NULL when either
-- side is (BigQuery's CONCAT too; PostgreSQL's concat() skips NULLs), and
-- str_arg exists for text only, so a non-STRING argument is an error as in
-- BigQuery.  Both inline, so a row costs no function call.
CREATE OR REPLACE FUNCTION bq_fake.str_arg(text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT $1$$;
CREATE OR REPLACE FUNCTION bq_fake.div(bigint, bigint) RETURNS bigint
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT $1 / $2$$;
CREATE OR REPLACE FUNCTION bq_fake.countif_step(bigint, boolean) RETURNS bigint
  LANGUAGE sql IMMUTABLE AS $$SELECT $1 + CASE WHEN $2 THEN 1 ELSE 0 END$$;
CREATE OR REPLACE AGGREGATE bq_fake.countif(boolean)
  (sfunc = bq_fake.countif_step, stype = bigint, initcond = '0');
-- '0x' hex (at most 16 digits, within int64) or decimal; anything else and
-- anything out of range is an error, as in BigQuery.  No loop: it runs once
-- per row.
CREATE OR REPLACE FUNCTION bq_fake.int64(text) RETURNS bigint
  LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE h text := substring($1 FROM '^-?0[xX]([0-9a-fA-F]+)$');
BEGIN
  IF h IS NOT NULL AND (length(h) < 16 OR (length(h) = 16 AND h ~ '^[0-7]')) THEN
    RETURN (CASE WHEN left($1, 1) = '-' THEN -1 ELSE 1 END) * ('x' || lpad(h, 16, '0'))::bit(64)::bigint;
  ELSIF h IS NULL AND $1 ~ '^-?[0-9]{1,19}$'
        AND $1::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
    RETURN $1::numeric::bigint;
  END IF;
  RAISE EXCEPTION 'Bad int64 value: %', $1;
END$$;
CREATE OR REPLACE FUNCTION bq_fake.int64(bigint) RETURNS bigint
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT $1$$;
CREATE OR REPLACE FUNCTION bq_fake.int64(integer) RETURNS bigint
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT $1$$;
CREATE OR REPLACE FUNCTION bq_fake.int64(numeric) RETURNS bigint
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT round($1)::bigint$$;
CREATE OR REPLACE FUNCTION bq_fake.int64(boolean) RETURNS bigint
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT CASE WHEN $1 THEN 1 ELSE 0 END$$;
CREATE OR REPLACE FUNCTION bq_fake.string(text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT $1$$;
CREATE OR REPLACE FUNCTION bq_fake.string(bigint) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT $1::text$$;
CREATE OR REPLACE FUNCTION bq_fake.string(integer) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT $1::text$$;
CREATE OR REPLACE FUNCTION bq_fake.string(numeric) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT trim_scale($1)::text$$;
CREATE OR REPLACE FUNCTION bq_fake.string(boolean) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT AS $$SELECT CASE WHEN $1 THEN 'true' ELSE 'false' END$$;
CREATE OR REPLACE FUNCTION bq_fake.fmt(text) RETURNS text
  LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE out text := ''; i int := 1; c text; n int;
BEGIN
  WHILE i <= length($1) LOOP
    c := substr($1, i, 1);
    IF c <> '%' THEN
      out := out || CASE WHEN c ~ '[A-Za-z]' THEN '"' || c || '"' ELSE c END;
      i := i + 1; CONTINUE;
    END IF;
    c := substr($1, i + 1, 1);
    IF c = 'E' AND substr($1, i + 3, 1) = 'S' AND substr($1, i + 2, 1) ~ '[1-6]' THEN
      n := substr($1, i + 2, 1)::int;
      out := out || 'SS.' || CASE n WHEN 3 THEN 'MS' WHEN 6 THEN 'US' ELSE 'FF' || n END;
      i := i + 4; CONTINUE;
    END IF;
    out := out || CASE c WHEN 'Y' THEN 'YYYY' WHEN 'm' THEN 'MM' WHEN 'd' THEN 'DD'
                         WHEN 'H' THEN 'HH24' WHEN 'M' THEN 'MI' WHEN 'S' THEN 'SS'
                         WHEN 'F' THEN 'YYYY-MM-DD' WHEN 'T' THEN 'HH24:MI:SS'
                         WHEN '%' THEN '%' END;
    IF out IS NULL THEN
      RAISE EXCEPTION 'format element %% not modelled by the fake: %', c;
    END IF;
    i := i + 2;
  END LOOP;
  RETURN out;
END$$;
CREATE OR REPLACE FUNCTION bq_fake.format_timestamp(text, timestamptz, text DEFAULT 'UTC')
  RETURNS text LANGUAGE sql STABLE STRICT AS
  $$SELECT to_char($2 AT TIME ZONE $3, bq_fake.fmt($1))$$;
CREATE OR REPLACE FUNCTION bq_fake.format_timestamp(text, timestamp, text DEFAULT 'UTC')
  RETURNS text LANGUAGE plpgsql AS $$BEGIN
  RAISE EXCEPTION 'No matching signature for function FORMAT_TIMESTAMP for argument types: STRING, DATETIME';
END$$;
CREATE OR REPLACE FUNCTION bq_fake.format_datetime(text, timestamp)
  RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$SELECT to_char($2, bq_fake.fmt($1))$$;
CREATE OR REPLACE FUNCTION bq_fake.format_datetime(text, timestamptz)
  RETURNS text LANGUAGE plpgsql AS $$BEGIN
  RAISE EXCEPTION 'No matching signature for function FORMAT_DATETIME for argument types: STRING, TIMESTAMP';
END$$;
CREATE OR REPLACE FUNCTION bq_fake.format_date(text, date)
  RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$SELECT to_char($2, bq_fake.fmt($1))$$;
"""

# GoogleSQL function -> the bq_fake function it becomes (same arguments).
RENAMES = {"MD5": "md5", "TO_HEX": "to_hex", "COUNTIF": "countif",
           "FORMAT_TIMESTAMP": "format_timestamp",
           "FORMAT_DATETIME": "format_datetime", "FORMAT_DATE": "format_date"}

# PostgreSQL result type (pg_type oid) -> BigQuery schema type.
PG_TO_BQ = {20: "INTEGER", 21: "INTEGER", 23: "INTEGER", 1700: "NUMERIC",
            25: "STRING", 1043: "STRING", 16: "BOOLEAN", 701: "FLOAT",
            1082: "DATE", 1114: "DATETIME", 1184: "TIMESTAMP", 17: "BYTES"}


class QueryError(Exception):
    """An answer BigQuery would give instead of rows."""

    def __init__(self, status, reason, message, google_status):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.google_status = google_status

    def body(self):
        return {"error": {"code": self.status, "message": self.message,
                          "errors": [{"message": self.message,
                                      "domain": "global",
                                      "reason": self.reason}],
                          "status": self.google_status}}


def invalid(message):
    return QueryError(400, "invalidQuery", message, "INVALID_ARGUMENT")


def _fn(name, args):
    return exp.Anonymous(this="bq_fake." + name, expressions=list(args))


def _table_parts(node):
    parts = []
    for key in ("catalog", "db", "this"):
        text = node.text(key)
        if text:
            parts.extend(text.split("."))
    return parts


def _rewrite_table(node):
    parts = _table_parts(node)
    if len(parts) < 2:
        raise invalid('Table "%s" must be qualified with a dataset '
                      '(e.g. dataset.table).' % ".".join(parts))
    return exp.Table(this=exp.to_identifier(parts[-1], quoted=True),
                     db=exp.to_identifier(parts[-2], quoted=True),
                     alias=node.args.get("alias"))


def _rewrite_cast(node):
    to = node.args["to"].this
    T = exp.DataType.Type
    if to == T.BIGINT:
        return _fn("int64", [node.this])
    if to == T.TEXT:
        return _fn("string", [node.this])
    if to == T.TIMESTAMP:
        return exp.Cast(this=node.this,
                        to=exp.DataType.build("timestamptz"))
    if to == T.DATETIME:
        return exp.Cast(this=node.this, to=exp.DataType.build("timestamp"))
    return node


def _rewrite_qualify(select):
    """SELECT a, b FROM t WHERE w QUALIFY q  ->
       SELECT a, b FROM (SELECT a, b, q AS _bq_qualify FROM t WHERE w) AS
       _bq_q WHERE _bq_qualify"""
    qualify = select.args.get("qualify")
    if not any(select.args.get(k) for k in ("where", "group", "having")):
        raise invalid("QUALIFY clause must be used in conjunction with WHERE "
                      "or GROUP BY or HAVING clause")
    names = []
    for e in select.expressions:
        if isinstance(e, exp.Star) or e.alias_or_name in ("", "*"):
            raise invalid("the fake models QUALIFY only with named columns")
        names.append(e.alias_or_name)
    inner = select.copy()
    inner.set("qualify", None)
    inner = inner.select(exp.alias_(qualify.this, "_bq_qualify"))
    outer = exp.select(*[exp.column(n, quoted=True) for n in names]) \
        .from_(exp.alias_(exp.Subquery(this=inner), "_bq_q")) \
        .where(exp.column("_bq_qualify"))
    return outer


def _rewrite(node, ctes):
    """Bottom-up: children first, so a rewritten node keeps rewritten
    arguments (sqlglot's transform does not descend into a replaced node)."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _rewrite(value, ctes))
        elif isinstance(value, list):
            node.set(key, [_rewrite(v, ctes) if isinstance(v, exp.Expression)
                           else v for v in value])
    if isinstance(node, exp.Table):
        if len(_table_parts(node)) == 1 and node.name in ctes:
            return node
        return _rewrite_table(node)
    if isinstance(node, exp.Cast):
        return _rewrite_cast(node)
    if isinstance(node, exp.IntDiv):
        return _fn("div", [node.this, node.expression])
    if isinstance(node, exp.Concat):
        args = [_fn("str_arg", [a]) for a in node.expressions]
        out = args[0]
        for a in args[1:]:
            out = exp.DPipe(this=out, expression=a)
        return exp.Paren(this=out)
    if isinstance(node, exp.Anonymous):
        new = RENAMES.get(str(node.this).upper())
        if new:
            return _fn(new, node.expressions)
    if isinstance(node, exp.Select) and node.args.get("qualify"):
        return _rewrite_qualify(node)
    return node


def transpile(sql):
    """GoogleSQL text -> (PostgreSQL text, {(dataset, table)}, {column names})."""
    if sqlglot is None:
        raise QueryError(501, "notImplemented", "python3-sqlglot is not "
                         "installed", "UNIMPLEMENTED")
    try:
        trees = sqlglot.parse(sql, read="bigquery")
    except sqlglot.errors.ParseError as e:
        raise invalid("Syntax error: %s" % str(e).splitlines()[0])
    if len(trees) != 1 or not isinstance(trees[0], (exp.Select, exp.Union,
                                                    exp.Subqueryable)):
        raise invalid("the fake runs exactly one SELECT statement")
    tree = trees[0]
    ctes = {c.alias for c in tree.find_all(exp.CTE)}
    tables = set()
    for t in tree.find_all(exp.Table):
        parts = _table_parts(t)
        if len(parts) == 1 and t.name in ctes:
            continue
        if len(parts) < 2:
            _rewrite_table(t)  # raises BigQuery's error
        tables.add((parts[-2], parts[-1]))
    columns = {c.name.lower() for c in tree.find_all(exp.Column)}
    out = _rewrite(tree.copy(), ctes)
    return out.sql(dialect="postgres"), tables, columns


class Jobs:
    """The query jobs of one fake server. cfg() returns the fake's config:
    bq_sql_dsn (where the tables are), bq_location (the datasets' location;
    None accepts any), bq_query_pending_polls (answers with jobComplete
    false before the rows), bq_column_tags(dataset, table) -> {column: tags}
    is how the fake's table metadata says which columns carry a policy tag
    (the service account is no Fine-Grained Reader, so reading one is an
    accessDenied)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = {}
        self.ids = itertools.count(1)
        self.installed = set()
        self.stats = {"queries": 0, "dry_runs": 0, "bytes_billed": 0,
                      "bytes_processed": 0,
                      "bytes_limit_exceeded": 0, "polls": 0}

    def reset(self):
        with self.lock:
            self.jobs.clear()
            for k in self.stats:
                self.stats[k] = 0

    # ------------------------------------------------------------ database

    def connect(self, dsn):
        if psycopg2 is None:
            raise QueryError(501, "notImplemented", "python3-psycopg2 is not "
                             "installed", "UNIMPLEMENTED")
        if not dsn:
            raise QueryError(501, "notImplemented", "the fake has no "
                             "bq_sql_dsn configured", "UNIMPLEMENTED")
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET search_path = pg_catalog")
            with self.lock:
                need = dsn not in self.installed
            if need:
                cur.execute("SELECT pg_advisory_lock(4242)")
                cur.execute(SUPPORT_SQL)
                cur.execute("SELECT pg_advisory_unlock(4242)")
                with self.lock:
                    self.installed.add(dsn)
        return conn

    @staticmethod
    def table_bytes(cur, dataset, table, columns):
        """Logical bytes of the referenced columns of one table."""
        cur.execute("""SELECT a.attname, t.typname FROM pg_attribute a
                       JOIN pg_type t ON t.oid = a.atttypid
                       WHERE a.attrelid = to_regclass(quote_ident(%s) || '.'
                             || quote_ident(%s)) AND a.attnum > 0
                         AND NOT a.attisdropped""", (dataset, table))
        cols = cur.fetchall()
        if not cols:
            raise QueryError(404, "notFound", "Not found: Table %s.%s was not "
                             "found" % (dataset, table), "NOT_FOUND")
        terms = []
        for name, typ in cols:
            if name.lower() not in columns:
                continue
            q = '"%s"' % name.replace('"', '""')
            if typ in ("text", "varchar", "bpchar"):
                size = "2 + octet_length(%s)" % q
            elif typ in ("json", "jsonb"):
                size = "octet_length(%s::text)" % q
            elif typ == "numeric":
                size = "16"
            elif typ == "bool":
                size = "1"
            else:
                size = "8"
            terms.append("coalesce(sum(CASE WHEN %s IS NOT NULL THEN %s END),"
                         " 0)" % (q, size))
        if not terms:
            return 0
        cur.execute('SELECT %s FROM "%s"."%s"' % (" + ".join(terms),
                    dataset.replace('"', '""'), table.replace('"', '""')))
        return int(cur.fetchone()[0])

    # ------------------------------------------------------------ requests

    def check_tags(self, tags_of, project, tables, columns):
        for dataset, table in sorted(tables):
            tags = tags_of(dataset, table) or {}
            for col, t in sorted(tags.items()):
                if t and col.lower() in columns:
                    raise QueryError(
                        403, "accessDenied", "Access Denied: BigQuery "
                        "BigQuery: User does not have permission to access "
                        "policy tag \"%s\" on column %s.%s.%s.%s."
                        % (t[0], project, dataset, table, col),
                        "PERMISSION_DENIED")

    def query(self, project, body, cfg, tags_of):
        """jobs.query: returns (status, body)."""
        try:
            return 200, self._query(project, body, cfg, tags_of)
        except QueryError as e:
            return e.status, e.body()

    def _query(self, project, body, cfg, tags_of):
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            raise QueryError(400, "invalid", "Required parameter is missing: "
                             "query", "INVALID_ARGUMENT")
        if body.get("useLegacySql", True) is not False:
            # legacy SQL reads `p.d.t` and GoogleSQL functions as errors
            raise invalid("Legacy SQL is not modelled: send useLegacySql false")
        location = body.get("location")
        want = cfg.get("bq_location")
        pg_sql, tables, columns = transpile(body["query"])
        if want and location and location.lower() != want.lower():
            d = sorted(tables)[0][0] if tables else "?"
            raise QueryError(404, "notFound", "Not found: Dataset %s:%s was "
                             "not found in location %s" % (project, d, location),
                             "NOT_FOUND")
        self.check_tags(tags_of, project, tables, columns)
        conn = self.connect(cfg.get("bq_sql_dsn"))
        try:
            with conn.cursor() as cur:
                per_table = [self.table_bytes(cur, d, t, columns)
                             for d, t in sorted(tables)]
                processed = sum(per_table)
                billed = max(MIN_BILLED, sum(
                    max(MIN_BILLED, -(-b // MIB) * MIB) for b in per_table))
                if body.get("dryRun"):
                    self._explain(cur, pg_sql)
                    with self.lock:
                        self.stats["dry_runs"] += 1
                    return {"kind": "bigquery#queryResponse",
                            "jobReference": {"projectId": project,
                                             "location": location or want},
                            "totalBytesProcessed": str(processed),
                            "jobComplete": True, "cacheHit": False}
                cap = body.get("maximumBytesBilled")
                if cap is not None and billed > int(cap):
                    with self.lock:
                        self.stats["bytes_limit_exceeded"] += 1
                    raise QueryError(
                        500, "bytesBilledLimitExceeded",
                        "Query exceeded limit for bytes billed: %d. %d or "
                        "higher required." % (int(cap), billed), "INTERNAL")
        finally:
            conn.close()
        return self._start(project, location or want, pg_sql, processed,
                           billed, cfg, body)

    def _explain(self, cur, pg_sql):
        try:
            cur.execute("EXPLAIN " + pg_sql)
        except psycopg2.Error as e:
            raise invalid(self._pg_message(e))

    @staticmethod
    def _pg_message(e):
        diag = getattr(e, "diag", None)
        msg = diag.message_primary if diag is not None else None
        return msg or str(e).strip().splitlines()[0]

    def _run(self, cfg, pg_sql):
        conn = self.connect(cfg.get("bq_sql_dsn"))
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute(pg_sql)
                except psycopg2.Error as e:
                    raise invalid(self._pg_message(e))
                fields = [{"name": d.name,
                           "type": PG_TO_BQ.get(d.type_code, "STRING"),
                           "mode": "NULLABLE"} for d in cur.description]
                rows = [{"f": [{"v": _value(v)} for v in row]}
                        for row in cur.fetchall()]
        finally:
            conn.close()
        return {"fields": fields, "rows": rows}

    def _start(self, project, location, pg_sql, processed, billed, cfg,
               body):
        """Runs the query in a thread, as BigQuery runs a job; answers when
        it is done or after timeoutMs (default 10 s), jobComplete false."""
        job_id = "job_fake_%d" % next(self.ids)
        job = {"projectId": project, "location": location, "result": None,
               "error": None, "processed": processed, "billed": billed,
               "pending": int(cfg.get("bq_query_pending_polls") or 0),
               "done": threading.Event(), "created": time.time()}

        def work():
            try:
                job["result"] = self._run(cfg, pg_sql)
            except QueryError as e:
                job["error"] = e
            except Exception as e:  # the fake's own failure: say so
                job["error"] = QueryError(500, "backendError", "fake: %s" % e,
                                          "INTERNAL")
            job["done"].set()
        with self.lock:
            self.jobs[job_id] = job
            self.stats["queries"] += 1
            self.stats["bytes_billed"] += billed
            self.stats["bytes_processed"] += processed
        threading.Thread(target=work, daemon=True).start()
        job["done"].wait(_timeout_s(body.get("timeoutMs")))
        ref = {"projectId": project, "jobId": job_id, "location": location}
        with self.lock:
            return self._answer(job, ref, "bigquery#queryResponse")

    def _answer(self, job, ref, kind):
        """(caller holds the lock) the rows, or jobComplete false; a job
        that failed raises its error."""
        if job["pending"] > 0 or not job["done"].is_set():
            if job["pending"] > 0:
                job["pending"] -= 1
            return {"kind": kind, "jobReference": ref, "jobComplete": False}
        if job["error"] is not None:
            raise job["error"]
        out = self._complete(job, ref)
        out["kind"] = kind
        return out

    @staticmethod
    def _complete(job, ref):
        r = job["result"]
        out = {"kind": "bigquery#queryResponse", "jobReference": ref,
               "schema": {"fields": r["fields"]},
               "totalRows": str(len(r["rows"])), "jobComplete": True,
               "totalBytesProcessed": str(job["processed"]),
               "totalBytesBilled": str(job["billed"]), "cacheHit": False}
        if r["rows"]:
            out["rows"] = r["rows"]
        return out

    def get_results(self, project, job_id, args):
        """jobs.getQueryResults: returns (status, body)."""
        with self.lock:
            job = self.jobs.get(job_id)
            self.stats["polls"] += 1
        loc = args.get("location")
        if job is None or job["projectId"] != project or (
                job["location"] and (loc or "").lower()
                != job["location"].lower()):
            e = QueryError(404, "notFound", "Not found: Job %s:%s.%s"
                           % (project, loc or "US", job_id), "NOT_FOUND")
            return e.status, e.body()
        job["done"].wait(_timeout_s(args.get("timeoutMs")))
        ref = {"projectId": project, "jobId": job_id,
               "location": job["location"]}
        try:
            with self.lock:
                return 200, self._answer(
                    job, ref, "bigquery#getQueryResultsResponse")
        except QueryError as e:
            return e.status, e.body()


def _timeout_s(value):
    """timeoutMs as seconds (BigQuery's default: 10 s)."""
    try:
        return max(0.0, int(value) / 1000.0)
    except (TypeError, ValueError):
        return 10.0


def _value(v):
    """A cell as the REST API writes it: a string, or None for NULL."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if hasattr(v, "as_tuple"):  # Decimal: BigQuery prints no trailing zeros
        s = format(v.normalize(), "f") if v != 0 else "0"
        return s
    if isinstance(v, (bytes, memoryview)):
        import base64
        return base64.b64encode(bytes(v)).decode()
    return str(v)


def dumps(body):
    return json.dumps(body)
