/* SPDX-License-Identifier: MIT */
/*
 * maildrop.h - local submission: the files `sendmail` leaves in
 * <spool>/maildrop and the daemon's pickup that moves them into the spool.
 *
 * Who may write there.  Any local account may run sendmail (cron jobs, web
 * applications, scripts), so the maildrop is a sticky, world-writable,
 * set-group-ID directory owned by the daemon's account (mode 3733,
 * ortoo:ortoo), as /tmp is sticky:
 *   - anyone may create a file in it; no one but the daemon may list it
 *     (no read bit), and no one may remove or rename another's file
 *     (sticky bit);
 *   - the files take the directory's group (set-group-ID bit), and the
 *     writer makes them mode 0640, so the daemon can read them and other
 *     users cannot;
 *   - the kernel records the writer as the file's owner, so the daemon
 *     knows which account submitted a message without trusting its content
 *     (it names the uid in the Received: field, as Postfix does).
 * The alternative, a set-group-ID helper as Postfix's postdrop, would make
 * the whole ortoo binary (TLS, config parsing, every command) run with a
 * privileged group for any local user; the directory needs no privilege at
 * all.  What a writer controls is its own message only, and every file is
 * validated before it is used (see maildrop_parse): a regular file with one
 * link, within the size limit, in the exact format below, or it is moved to
 * <spool>/quarantine and logged.  A local user can fill the disk through
 * it, as through /tmp.
 *
 * The daemon is told about a new file through the public control socket
 * (`pickup NAME`, answered once the message is durably in the spool), and
 * also scans the directory at start and every MAILDROP_SCAN_MS, so a file
 * written while the daemon was down is queued when it starts.  A drop file
 * is deleted only after the spool commit that holds its message is durable.
 *
 * File format (NAME is "m" and 32 hex digits; the file is written under
 * that name directly, complete files end with the "end" line):
 *
 *   ortoo-maildrop 1 LF
 *   from <ADDRESS> LF                 the envelope sender ("<>": null sender)
 *   rcpt <ADDRESS> LF                 one line per recipient, at least one
 *   size N LF                         bytes of message that follow
 *   LF
 *   N bytes: the message in wire form (CRLF lines, dot-stuffed, no final ".")
 *   end LF
 */
#ifndef ORTOO_MAILDROP_H
#define ORTOO_MAILDROP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MAILDROP_DIR_NAME "maildrop"
#define MAILDROP_DIR_MODE 03733
#define MAILDROP_FILE_MODE 0640
#define MAILDROP_NAME_LEN 33            /* "m" + 32 hex digits */
#define MAILDROP_ADDR_MAX 320           /* an address: 64 + "@" + 255 */
#define MAILDROP_SCAN_MS 10000          /* periodic scan of the directory */
#define MAILDROP_STALE_S 3600           /* an incomplete file older than this is dropped */

struct config;
struct control;
struct smtp_reactor;

/* A parsed drop file (pointers into the buffer given to maildrop_parse). */
struct maildrop_msg {
    const char *sender;                 /* NUL-terminated, "" for <> */
    const char **rcpts;                 /* owned array (free it), strings in buf */
    size_t nrcpts;
    const char *data;                   /* wire-form message */
    size_t size;
    bool has_8bit;                      /* a byte >= 0x80 in the message */
    bool has_utf8_addr;                 /* a non-ASCII address */
};

/*
 * Parse and check a whole drop file held in buf (len bytes; buf is modified
 * and must stay alive while *m is used).  Returns 0; 1 when the file is
 * incomplete (no "end" line yet: a writer may still be at work); -1 when it
 * is malformed, with the reason in err.  max_size and max_rcpts bound it.
 */
int maildrop_parse(char *buf, size_t len, uint64_t max_size, size_t max_rcpts,
                   struct maildrop_msg *m, char *err, size_t errlen);

/* True if name is a drop file's name. */
bool maildrop_name_valid(const char *name);

/* ---- the writer (cli/cli_sendmail.c) ---- */

/*
 * Write one drop file into dir (the maildrop directory): a new random name
 * (returned in name[MAILDROP_NAME_LEN + 1]), O_EXCL, mode 0640, the header
 * then data (wire form, data_len bytes) then "end", fsync'd.  sender "" is
 * the null sender.  Blocking.  Returns 0, or -errno with a message in err;
 * nothing is left behind on failure.
 */
int maildrop_write(const char *dir, const char *sender, const char *const *rcpts, size_t nrcpts,
                   const char *data, size_t data_len, char *name, char *err, size_t errlen);

/* ---- the daemon's pickup (core/server.c) ---- */

struct maildrop;

/*
 * Start the pickup for <cfg->spool>/maildrop: make the directory (mode
 * 3733) if needed, register the public `pickup` command on ctl, watch a
 * periodic timer on ctl's loop and scan once.  Messages are submitted to
 * the reactors' spools in turn (the array is borrowed for the life of the
 * pickup; their loops must run).  cfg is borrowed until maildrop_set_config
 * replaces it.  Main thread.  Returns NULL with a message in err.
 */
struct maildrop *maildrop_start(struct control *ctl, const struct config *cfg,
                                struct smtp_reactor *const *reactors, size_t nreactors,
                                char *err, size_t errlen);

/* A reload's new configuration (size and recipient limits, hostname). */
void maildrop_set_config(struct maildrop *md, const struct config *cfg);

/*
 * Stop taking files and wait (running the control's posted tasks) for the
 * messages in flight to be committed, at most timeout_ms; call before the
 * reactors stop.  Then free.  Files not committed stay in the maildrop.
 */
void maildrop_stop(struct maildrop *md, int timeout_ms);

#endif
