/*
 * log.h - one-line log records on stderr: "TIME PROG[PID] LEVEL: message".
 * The level threshold comes from $SHOAL_LOG_LEVEL (error, warn, info, debug;
 * default info).  Thread-safe (one write(2) per record).
 */
#ifndef SHOAL_LOG_H
#define SHOAL_LOG_H

enum { LOG_LVL_ERROR = 0, LOG_LVL_WARN = 1, LOG_LVL_INFO = 2, LOG_LVL_DEBUG = 3 };

/* Set the program name shown in every record (not copied: pass a literal). */
void log_init(const char *prog);
void log_set_level(int level);
int log_get_level(void);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_get_level() >= LOG_LVL_DEBUG) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

#endif
