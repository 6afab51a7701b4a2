/* SPDX-License-Identifier: MIT */
/*
 * server.h - the daemon: configuration, listeners, reactor threads, signals.
 *
 * server_run() is what `ortoo serve` (cli/cli_serve.c) calls.  It loads the
 * configuration from config_dir, binds every listener, starts the reactors
 * and then serves until SIGTERM/SIGINT; SIGHUP reloads what can change
 * without new sockets.  It blocks the calling thread for the life of the
 * daemon and returns the process exit status (0 after a clean stop, 1 when
 * start-up failed, with one line on stderr saying why).
 */
#ifndef ORTOO_SERVER_H
#define ORTOO_SERVER_H

/* The running server's pid file: <spool>/ortoo.pid (the spool is the one
 * directory the daemon may write, also under systemd's ProtectSystem). */
#define SERVER_PID_FILE "ortoo.pid"
/* The lock that makes one daemon per spool: <spool>/ortoo.lock, held with
 * flock(LOCK_EX) for the daemon's life and holding its pid.  Only the
 * holder writes or removes the pid file. */
#define SERVER_LOCK_FILE "ortoo.lock"

int server_run(const char *config_dir);

#endif
