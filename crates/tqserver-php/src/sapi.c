/*
 * TQServer's SAPI: the C side of the embedded PHP runtime.
 *
 * PHP's SAPI interface is a struct of C callbacks and a set of macros over
 * PHP's globals, which Rust cannot express without copying PHP's struct
 * layouts; this file holds that part and nothing else. Everything about
 * FastCGI, sockets and processes is Rust (the .rs files), reached through the
 * `tq_io` callbacks of the request being run.
 *
 * One request at a time per process (PHP is built without ZTS): the
 * current request lives in the file-level `current`.
 */

#include <main/php.h>
#include <main/SAPI.h>
#include <main/php_main.h>
#include <main/php_variables.h>
#include <main/php_ini.h>
#include <main/php_output.h>
#include <ext/standard/info.h>
#include <ext/standard/head.h>
#include <zend_ini.h>
#include <zend_smart_str.h>
#include <zend_exceptions.h>
#include <ext/spl/spl_exceptions.h>

#include <ctype.h>
#include <unistd.h>

/* One CGI variable of the request (NUL-terminated, owned by Rust). */
typedef struct {
	const char *name;
	const char *value;
	size_t value_len;
} tq_param;

/* What the request's bytes go through; all owned by Rust. */
typedef struct {
	void *ctx;
	/* The response's bytes; returns 0 when the client is gone. */
	int (*write)(void *ctx, const char *buf, size_t len);
	/* Pushes what was written so far to the client. */
	int (*flush)(void *ctx);
	/* Up to len bytes of the request body; 0 at its end. */
	size_t (*read_body)(void *ctx, char *buf, size_t len);
	/* fastcgi_finish_request(): the response is complete. */
	void (*finish)(void *ctx);
	/* A line for the request's error log (FastCGI STDERR). */
	void (*log)(void *ctx, const char *msg, size_t len);
	/* Worker mode: blocks until the next request; its variables in
	 * *params (valid until the next call). 0: the worker is to stop. */
	int (*next)(void *ctx, const tq_param **params, size_t *n);
	/* Worker mode: the request is over; `memory` is what the script
	 * holds now. */
	void (*end)(void *ctx, int status, size_t memory);
} tq_io;

typedef struct {
	const tq_param *params;
	size_t n;
	const tq_io *io;
	int finished;
	int client_gone;
} tq_request;

static tq_request *current = NULL;

/* Worker mode (php.worker): the worker script runs once, as a request of
 * its own (`boot`, no client: its output goes to the log), and each
 * tqserver_handle_request() swaps in a client request (`req`) around the
 * callback: PHP's per-request layer (output, headers, the SAPI's request
 * state, the superglobals, sessions) is ended and started again, while
 * the script's own state (objects, statics, included code) stays. */
static struct {
	int on;			/* a worker script is running */
	int layer;		/* a per-request layer is active */
	int in_request;		/* a client request is being handled */
	tq_request boot;
	tq_request req;
} worker;

static const char *param(const char *name, size_t *len)
{
	if (!current) {
		return NULL;
	}
	for (size_t i = 0; i < current->n; i++) {
		if (strcmp(current->params[i].name, name) == 0) {
			if (len) {
				*len = current->params[i].value_len;
			}
			return current->params[i].value;
		}
	}
	return NULL;
}

/* The client is gone: connection_aborted() is 1 from now on. Without
 * ignore_user_abort a classic script ends here, as under php-fpm; a worker
 * script's request goes on to its end (ending the script would cost the
 * worker, not the request). */
static void aborted(void)
{
	if (worker.on) {
		PG(connection_status) |= PHP_CONNECTION_ABORTED;
	} else {
		php_handle_aborted_connection();
	}
}

static size_t tq_ub_write(const char *str, size_t len)
{
	if (!current || current->finished) {
		/* After fastcgi_finish_request() output goes nowhere. */
		return len;
	}
	if (current->client_gone || !current->io->write(current->io->ctx, str, len)) {
		current->client_gone = 1;
		aborted();
		return 0;
	}
	return len;
}

static void tq_flush(void *server_context)
{
	if (current && !current->finished && !current->client_gone) {
		if (!current->io->flush(current->io->ctx)) {
			current->client_gone = 1;
			aborted();
		}
	}
}

static void add(smart_str *head, const char *s, size_t len)
{
	smart_str_appendl(head, s, len);
}

/* The CGI response head: Status (unless the script set one), the headers,
 * a blank line; written as one piece. */
static int tq_send_headers(sapi_headers_struct *headers)
{
	smart_str head = {0};
	int has_status = 0;
	zend_llist_position pos;
	sapi_header_struct *h;

	if (SG(request_info).no_headers == 1 || (worker.on && current == &worker.boot)) {
		/* No client: a worker script outside a request. */
		return SAPI_HEADER_SENT_SUCCESSFULLY;
	}
	for (h = zend_llist_get_first_ex(&headers->headers, &pos); h;
	     h = zend_llist_get_next_ex(&headers->headers, &pos)) {
		if (h->header_len > 7 && strncasecmp(h->header, "Status:", 7) == 0) {
			has_status = 1;
		}
	}
	if (!has_status && (headers->http_response_code != 200 || headers->http_status_line)) {
		char line[128];
		const char *reason = NULL;
		int code = headers->http_response_code;
		if (headers->http_status_line) {
			/* "HTTP/1.1 404 Not Found": the reason after the code. */
			const char *sp = strchr(headers->http_status_line, ' ');
			if (sp) {
				sp = strchr(sp + 1, ' ');
				if (sp) {
					reason = sp + 1;
				}
			}
		}
		int n = snprintf(line, sizeof line, "Status: %d%s%.80s\r\n", code,
				 reason ? " " : "", reason ? reason : "");
		if (n > 0) {
			add(&head, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
		}
	}
	for (h = zend_llist_get_first_ex(&headers->headers, &pos); h;
	     h = zend_llist_get_next_ex(&headers->headers, &pos)) {
		add(&head, h->header, h->header_len);
		add(&head, "\r\n", 2);
	}
	add(&head, "\r\n", 2);
	smart_str_0(&head);
	if (current && !current->finished && !current->client_gone && head.s) {
		if (!current->io->write(current->io->ctx, ZSTR_VAL(head.s), ZSTR_LEN(head.s))) {
			current->client_gone = 1;
		}
	}
	smart_str_free(&head);
	return SAPI_HEADER_SENT_SUCCESSFULLY;
}

static size_t tq_read_post(char *buf, size_t len)
{
	if (!current) {
		return 0;
	}
	return current->io->read_body(current->io->ctx, buf, len);
}

static char *tq_read_cookies(void)
{
	return (char *)param("HTTP_COOKIE", NULL);
}

static char *tq_getenv(const char *name, size_t name_len)
{
	/* Names are NUL-terminated by the caller (sapi_getenv copies). */
	return (char *)param(name, NULL);
}

/* $_SERVER: the process environment (the worker's variables), then every
 * CGI variable TQServer sent, then PHP_SELF, as php-fpm builds it. */
static void tq_register_variables(zval *track_vars_array)
{
	size_t len;
	php_import_environment_variables(track_vars_array);
	if (!current) {
		return;
	}
	for (size_t i = 0; i < current->n; i++) {
		size_t new_len;
		char *value = estrndup(current->params[i].value, current->params[i].value_len);
		if (sapi_module.input_filter(PARSE_SERVER, current->params[i].name, &value,
					     current->params[i].value_len, &new_len)) {
			php_register_variable_safe(current->params[i].name, value, new_len, track_vars_array);
		}
		efree(value);
	}
	const char *script_name = param("SCRIPT_NAME", &len);
	if (script_name) {
		size_t info_len = 0;
		const char *info = param("PATH_INFO", &info_len);
		smart_str self = {0};
		smart_str_appendl(&self, script_name, len);
		if (info) {
			smart_str_appendl(&self, info, info_len);
		}
		smart_str_0(&self);
		php_register_variable_safe("PHP_SELF", ZSTR_VAL(self.s), ZSTR_LEN(self.s), track_vars_array);
		smart_str_free(&self);
	}
}

static void tq_log_message(const char *message, int syslog_type_int)
{
	size_t len = strlen(message);
	if (current && current->io->log) {
		current->io->log(current->io->ctx, message, len);
	} else {
		/* Between requests (start-up, shutdown): the master's stderr,
		 * which TQServer logs as the worker's. */
		(void)!write(STDERR_FILENO, message, len);
		(void)!write(STDERR_FILENO, "\n", 1);
	}
}

static int tq_startup(sapi_module_struct *module)
{
	return php_module_startup(module, NULL);
}

/* .user.ini files (user_ini.filename), as php-cgi and php-fpm read them:
 * from the document root down to the script's directory, outer first so
 * the inner ones win; only the script's own directory when it is not
 * under the root. Read on every request (php-cgi caches them for
 * user_ini.cache_ttl seconds; this costs one stat per directory). */
static int tq_activate(void)
{
	const char *script = SG(request_info).path_translated;
	const char *name = PG(user_ini_filename);
	size_t root_len = 0;
	const char *root = param("DOCUMENT_ROOT", &root_len);
	HashTable conf;

	if (!script || !name || !*name || worker.in_request) {
		/* A worker script's requests keep the settings it started
		 * with: PHP restores .user.ini values only at the end of the
		 * script, so per-request ones would pile up. */
		return SUCCESS;
	}
	char *dir = estrdup(script);
	char *slash = strrchr(dir, '/');
	if (!slash || slash == dir) {
		efree(dir);
		return SUCCESS;
	}
	*slash = 0;
	size_t dir_len = strlen(dir);
	while (root && root_len > 1 && root[root_len - 1] == '/') {
		root_len--;
	}
	size_t start = dir_len;
	if (root && root_len > 0 && root_len <= dir_len && strncmp(dir, root, root_len) == 0 &&
	    (dir[root_len] == '/' || dir[root_len] == 0)) {
		start = root_len;
	}
	zend_hash_init(&conf, 8, NULL, (dtor_func_t)config_zval_dtor, 1);
	for (size_t i = start; i <= dir_len; i++) {
		if (i == dir_len || dir[i] == '/') {
			char c = dir[i];
			dir[i] = 0;
			php_parse_user_ini_file(dir, name, &conf);
			dir[i] = c;
		}
	}
	php_ini_activate_config(&conf, PHP_INI_PERDIR, PHP_INI_STAGE_HTACCESS);
	zend_hash_destroy(&conf);
	efree(dir);
	return SUCCESS;
}

static int tq_deactivate(void)
{
	return SUCCESS;
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_finish, 0, 0, _IS_BOOL, 0)
ZEND_END_ARG_INFO()

/* fastcgi_finish_request(): the client gets the whole response now and the
 * script goes on, as under php-fpm. */
PHP_FUNCTION(fastcgi_finish_request)
{
	ZEND_PARSE_PARAMETERS_NONE();
	if (!current || current->finished) {
		RETURN_FALSE;
	}
	php_output_end_all();
	php_header();
	if (!current->client_gone) {
		current->io->finish(current->io->ctx);
	}
	current->finished = 1;
	RETURN_TRUE;
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_headers, 0, 0, IS_ARRAY, 0)
ZEND_END_ARG_INFO()

/* apache_request_headers(), also getallheaders(), as php-fpm and php-cgi
 * define them: the request's headers from its HTTP_* variables and
 * CONTENT_TYPE / CONTENT_LENGTH, "HTTP_X_FOO_BAR" named "X-Foo-Bar". */
PHP_FUNCTION(apache_request_headers)
{
	ZEND_PARSE_PARAMETERS_NONE();
	array_init(return_value);
	if (!current) {
		return;
	}
	for (size_t i = 0; i < current->n; i++) {
		const char *name = current->params[i].name;
		const char *rest;
		char key[256];
		size_t k = 0;
		int upper = 1;

		if (strncmp(name, "HTTP_", 5) == 0) {
			rest = name + 5;
		} else if (strcmp(name, "CONTENT_TYPE") == 0 || strcmp(name, "CONTENT_LENGTH") == 0) {
			rest = name;
		} else {
			continue;
		}
		if (!*rest || strlen(rest) >= sizeof key) {
			continue;
		}
		for (const char *c = rest; *c; c++) {
			if (*c == '_') {
				key[k++] = '-';
				upper = 1;
			} else {
				key[k++] = upper ? (char)toupper((unsigned char)*c) : (char)tolower((unsigned char)*c);
				upper = 0;
			}
		}
		add_assoc_stringl_ex(return_value, key, k, (char *)current->params[i].value,
				     current->params[i].value_len);
	}
}

ZEND_BEGIN_ARG_WITH_RETURN_TYPE_INFO_EX(arginfo_handle, 0, 1, _IS_BOOL, 0)
	ZEND_ARG_TYPE_INFO(0, callback, IS_CALLABLE, 0)
ZEND_END_ARG_INFO()

PHP_FUNCTION(tqserver_handle_request);

static const zend_function_entry tq_functions[] = {
	ZEND_FE(fastcgi_finish_request, arginfo_finish)
	ZEND_FE(apache_request_headers, arginfo_headers)
	ZEND_NAMED_FE(getallheaders, ZEND_FN(apache_request_headers), arginfo_headers)
	ZEND_FE(tqserver_handle_request, arginfo_handle)
	/* FrankenPHP's name, so its worker scripts run unchanged. */
	ZEND_NAMED_FE(frankenphp_handle_request, ZEND_FN(tqserver_handle_request), arginfo_handle)
	ZEND_NAMED_FE(frankenphp_finish_request, ZEND_FN(fastcgi_finish_request), arginfo_finish)
	ZEND_NAMED_FE(frankenphp_request_headers, ZEND_FN(apache_request_headers), arginfo_headers)
	ZEND_FE_END
};

/* "fpm-fcgi": opcache enables itself only for SAPI names on its list
 * (accel_find_sapi), and applications that look at php_sapi_name() find
 * the FastCGI server they behave best under: fastcgi_finish_request()
 * exists, headers go as CGI. */
static sapi_module_struct tq_module = {
	"fpm-fcgi",
	"FPM/FastCGI (TQServer embedded)",
	tq_startup,
	php_module_shutdown_wrapper,
	tq_activate,
	tq_deactivate,
	tq_ub_write,
	tq_flush,
	NULL,			/* get_stat */
	tq_getenv,
	php_error,
	NULL,			/* header_handler */
	tq_send_headers,
	NULL,			/* send_header */
	tq_read_post,
	tq_read_cookies,
	tq_register_variables,
	tq_log_message,
	NULL,			/* get_request_time */
	NULL,			/* terminate_process */
	STANDARD_SAPI_MODULE_PROPERTIES
};

static char *ini_entries_copy = NULL;

/* Starts PHP once: module start-up (opcache's and APCu's shared memory are
 * made here), with `ini` ("key=value\n" lines, the -d settings) after the
 * php.ini files. `ini_file`: a php.ini instead of the embed SAPI's own
 * (/etc/php/8.2/embed on Debian), or NULL. 0 on success. */
int tq_php_startup(const char *ini, const char *ini_file)
{
	/* Errors go to the log (stderr), never into responses by default:
	 * php-fpm's defaults, which php.ini may change. */
	static const char defaults[] = "html_errors=1\nregister_argc_argv=0\nimplicit_flush=0\nmax_execution_time=30\n";
	size_t n = strlen(ini);
	ini_entries_copy = malloc(sizeof defaults + n + 1);
	if (!ini_entries_copy) {
		return -1;
	}
	memcpy(ini_entries_copy, defaults, sizeof defaults - 1);
	memcpy(ini_entries_copy + sizeof defaults - 1, ini, n + 1);
	sapi_startup(&tq_module);
	tq_module.ini_entries = ini_entries_copy;
	tq_module.additional_functions = tq_functions;
	tq_module.php_ini_ignore_cwd = 1;
	if (ini_file) {
		tq_module.php_ini_path_override = strdup(ini_file);
	}
	if (tq_module.startup(&tq_module) == FAILURE) {
		return -1;
	}
	return 0;
}

/* The PHP version, for `-v`. */
const char *tq_php_version(void)
{
	return PHP_VERSION;
}

static void request_info(void)
{
	const char *v;
	SG(request_info).request_method = param("REQUEST_METHOD", NULL);
	SG(request_info).query_string = (char *)param("QUERY_STRING", NULL);
	SG(request_info).request_uri = (char *)param("REQUEST_URI", NULL);
	SG(request_info).path_translated = (char *)param("SCRIPT_FILENAME", NULL);
	SG(request_info).content_type = param("CONTENT_TYPE", NULL);
	v = param("CONTENT_LENGTH", NULL);
	SG(request_info).content_length = v ? ZEND_STRTOL(v, NULL, 10) : 0;
	v = param("SERVER_PROTOCOL", NULL);
	SG(request_info).proto_num = (v && strcmp(v, "HTTP/1.0") == 0) ? 1000 : 1100;
	SG(request_info).auth_user = NULL;
	SG(request_info).auth_password = NULL;
	SG(request_info).auth_digest = NULL;
	SG(sapi_headers).http_response_code = 200;
	/* Non-NULL: a web request (sapi_activate reads POST data only then). */
	SG(server_context) = (void *)1;
	v = param("HTTP_AUTHORIZATION", NULL);
	php_handle_auth_data(v);
}

/* Runs one request from scratch: its script with the request's variables,
 * headers and output through `io`. Returns 0, or -1 when PHP could not
 * start the request; *app_status gets the script's exit status. */
int tq_php_run(const tq_param *params, size_t n, const tq_io *io, int *app_status)
{
	tq_request req = {params, n, io, 0, 0};
	zend_file_handle file;

	current = &req;
	request_info();
	const char *script = SG(request_info).path_translated;
	if (!script || access(script, R_OK) != 0) {
		/* php-cgi's answer to a script it cannot open. */
		static const char missing[] = "Status: 404 Not Found\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nNo input file specified.\n";
		io->write(io->ctx, missing, sizeof missing - 1);
		current = NULL;
		SG(server_context) = NULL;
		*app_status = 0;
		return 0;
	}
	if (php_request_startup() == FAILURE) {
		current = NULL;
		SG(server_context) = NULL;
		return -1;
	}
	zend_stream_init_filename(&file, script);
	php_execute_script(&file);
	zend_destroy_file_handle(&file);
	*app_status = EG(exit_status);
	php_request_shutdown(NULL);
	SG(server_context) = NULL;
	current = NULL;
	return 0;
}

/* A module's request start or end (RINIT/RSHUTDOWN), by name. */
static void module_request(const char *name, int start)
{
	zend_module_entry *m = zend_hash_str_find_ptr(&module_registry, name, strlen(name));
	if (!m) {
		return;
	}
	if (start && m->request_startup_func) {
		m->request_startup_func(m->type, m->module_number);
	} else if (!start && m->request_shutdown_func) {
		m->request_shutdown_func(m->type, m->module_number);
	}
}

/* The superglobals of the request now in SG(request_info), built again:
 * the worker script's code was compiled once, so the JIT ones ($_SERVER,
 * $_REQUEST) are not armed again by the compiler. $_ENV and $GLOBALS stay;
 * $_FILES is filled while $_POST is parsed, so it is emptied first. */
static void superglobals(void)
{
	zend_auto_global *g;
	zval *files = &PG(http_globals)[TRACK_VARS_FILES];

	zval_ptr_dtor_nogc(files);
	ZVAL_UNDEF(files);
	ZEND_HASH_FOREACH_PTR(CG(auto_globals), g) {
		if (!g->auto_global_callback || zend_string_equals_literal(g->name, "_ENV") ||
		    zend_string_equals_literal(g->name, "GLOBALS")) {
			continue;
		}
		if (g->jit && !zend_string_equals_literal(g->name, "_SERVER") &&
		    !zend_hash_exists(&EG(symbol_table), g->name)) {
			/* Never used so far: the compiler arms it if code that
			 * uses it is compiled later. */
			continue;
		}
		g->armed = g->auto_global_callback(g->name);
	} ZEND_HASH_FOREACH_END();
}

/* Starts PHP's per-request layer for the request in `current`: what
 * php_request_startup() does above the engine, which keeps running. */
static int layer_start(void)
{
	int ok = SUCCESS;

	request_info();
	zend_try {
		php_output_activate();
		PG(header_is_being_sent) = 0;
		PG(connection_status) = PHP_CONNECTION_NORMAL;
		sapi_activate();
		if (PG(expose_php)) {
			sapi_add_header(SAPI_PHP_VERSION_HEADER, sizeof(SAPI_PHP_VERSION_HEADER) - 1, 1);
		}
		if (PG(output_handler) && PG(output_handler)[0]) {
			zval handler;
			ZVAL_STRING(&handler, PG(output_handler));
			php_output_start_user(&handler, 0, PHP_OUTPUT_HANDLER_STDFLAGS);
			zval_ptr_dtor(&handler);
		} else if (PG(output_buffering)) {
			php_output_start_user(NULL, PG(output_buffering) > 1 ? PG(output_buffering) : 0,
					      PHP_OUTPUT_HANDLER_STDFLAGS);
		} else if (PG(implicit_flush)) {
			php_output_set_implicit_flush(1);
		}
		superglobals();
		/* A fresh session state (session.auto_start included). */
		module_request("session", 1);
	} zend_catch {
		ok = FAILURE;
	} zend_end_try();
	worker.layer = 1;
	return ok;
}

/* Ends the per-request layer: output flushed, headers sent, the session
 * written and closed, the SAPI's request state (headers, the body, uploaded
 * files) freed. A session save handler set outside a request does not
 * survive this: set it in the callback. */
static void layer_end(void)
{
	php_stream *body;

	zend_try {
		php_output_end_all();
	} zend_end_try();
	zend_try {
		module_request("session", 0);
	} zend_end_try();
	/* filter keeps raw copies of the input arrays for filter_input(). */
	module_request("filter", 0);
	zend_hash_str_del(&EG(symbol_table), "_SESSION", sizeof("_SESSION") - 1);
	zend_try {
		php_output_deactivate();
	} zend_end_try();
	body = SG(request_info).request_body;
	zend_try {
		sapi_deactivate();
	} zend_end_try();
	/* The request body's temporary stream (php://input) would otherwise
	 * live until the script ends: one per request. */
	if (body && body->res && GC_REFCOUNT(body->res) == 1) {
		php_stream_close(body);
	}
	SG(sapi_headers).http_response_code = 200;
	worker.layer = 0;
}

/* tqserver_handle_request(callable $handler): bool — waits for the next
 * request and runs $handler for it with that request's superglobals,
 * output and headers; false when the worker is to stop (TQServer stops or
 * replaces it, php.worker_max_memory). An uncaught exception is that
 * request's fatal error (500) and the worker goes on; exit() or a fatal
 * error ends the worker script after its request's answer is sent. */
PHP_FUNCTION(tqserver_handle_request)
{
	zend_fcall_info fci;
	zend_fcall_info_cache fcc;
	const tq_param *params = NULL;
	size_t n = 0;
	zval retval;

	ZEND_PARSE_PARAMETERS_START(1, 1)
		Z_PARAM_FUNC(fci, fcc)
	ZEND_PARSE_PARAMETERS_END();
	if (!worker.on) {
		zend_throw_exception(spl_ce_RuntimeException,
				     "tqserver_handle_request() works in a worker script only (php.worker in worker.yaml)", 0);
		RETURN_THROWS();
	}
	if (worker.in_request) {
		zend_throw_exception(spl_ce_RuntimeException,
				     "tqserver_handle_request() was called inside a request's handler", 0);
		RETURN_THROWS();
	}
	/* No max_execution_time while waiting for a request. */
	zend_unset_timeout();
	if (worker.layer) {
		/* The first call: the script's own start-up layer ends. */
		layer_end();
	}
	if (!worker.boot.io->next(worker.boot.io->ctx, &params, &n)) {
		/* A layer again for the rest of the script (shutdown
		 * functions, destructors), whose output goes to the log. */
		current = &worker.boot;
		layer_start();
		RETURN_FALSE;
	}
	worker.req.params = params;
	worker.req.n = n;
	worker.req.finished = 0;
	worker.req.client_gone = 0;
	current = &worker.req;
	worker.in_request = 1;
	EG(exit_status) = 0;
	if (layer_start() == SUCCESS) {
		zend_set_timeout(EG(timeout_seconds), 0);
		ZVAL_UNDEF(&retval);
		fci.retval = &retval;
		fci.params = NULL;
		fci.param_count = 0;
		zend_call_function(&fci, &fcc);
		zval_ptr_dtor(&retval);
		if (EG(exception)) {
			if (zend_is_unwind_exit(EG(exception)) || zend_is_graceful_exit(EG(exception))) {
				/* exit(): the script ends (tq_php_run_worker
				 * ends this request). */
				RETURN_THROWS();
			}
			/* Reported as PHP reports an uncaught exception at the
			 * top of a script (a fatal error: 500 unless headers
			 * were sent), without ending the worker. */
			zend_exception_error(EG(exception), E_ERROR);
		}
		zend_unset_timeout();
	}
	layer_end();
	worker.in_request = 0;
	current = &worker.boot;
	worker.boot.io->end(worker.boot.io->ctx, EG(exit_status), zend_memory_usage(0));
	EG(exit_status) = 0;
	RETURN_TRUE;
}

/* Worker mode: runs the worker script (`boot`: its variables, no client)
 * until it ends; its requests come through io->next. 0, or -1 when PHP
 * could not start the script; *app_status gets its exit status. */
int tq_php_run_worker(const tq_param *boot, size_t n, const tq_io *io, int *app_status)
{
	zend_file_handle file;
	int ret = 0;

	memset(&worker, 0, sizeof worker);
	worker.boot = (tq_request){boot, n, io, 0, 0};
	worker.req.io = io;
	current = &worker.boot;
	request_info();
	const char *script = SG(request_info).path_translated;
	if (!script || access(script, R_OK) != 0) {
		size_t len = 0;
		const char *name = param("SCRIPT_FILENAME", &len);
		char line[512];
		int k = snprintf(line, sizeof line, "the worker script %.400s cannot be read", name ? name : "(none)");
		io->log(io->ctx, line, k > 0 ? (size_t)k : 0);
		current = NULL;
		SG(server_context) = NULL;
		return -1;
	}
	if (php_request_startup() == FAILURE) {
		current = NULL;
		SG(server_context) = NULL;
		return -1;
	}
	worker.on = 1;
	worker.layer = 1;
	zend_stream_init_filename(&file, script);
	file.primary_script = 1;
	php_execute_script(&file);
	zend_destroy_file_handle(&file);
	*app_status = EG(exit_status);
	if (!worker.layer) {
		/* It returned from a handled request without asking for the
		 * next one: a layer for the end of the script. */
		current = &worker.boot;
		layer_start();
	}
	/* Shutdown functions and destructors run here; a request cut short
	 * by exit() or a fatal error gets its output and headers now. */
	php_request_shutdown(NULL);
	if (worker.in_request) {
		io->end(io->ctx, *app_status, 0);
	}
	memset(&worker, 0, sizeof worker);
	current = NULL;
	SG(server_context) = NULL;
	return ret;
}
