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
} tq_io;

typedef struct {
	const tq_param *params;
	size_t n;
	const tq_io *io;
	int finished;
	int client_gone;
} tq_request;

static tq_request *current = NULL;

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

static size_t tq_ub_write(const char *str, size_t len)
{
	if (!current || current->finished) {
		/* After fastcgi_finish_request() output goes nowhere. */
		return len;
	}
	if (current->client_gone || !current->io->write(current->io->ctx, str, len)) {
		current->client_gone = 1;
		/* connection_aborted() is 1 from now on; without
		 * ignore_user_abort the script ends here, as under php-fpm. */
		php_handle_aborted_connection();
		return 0;
	}
	return len;
}

static void tq_flush(void *server_context)
{
	if (current && !current->finished && !current->client_gone) {
		if (!current->io->flush(current->io->ctx)) {
			current->client_gone = 1;
			php_handle_aborted_connection();
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

	if (SG(request_info).no_headers == 1) {
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

	if (!script || !name || !*name) {
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

static const zend_function_entry tq_functions[] = {
	ZEND_FE(fastcgi_finish_request, arginfo_finish)
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
