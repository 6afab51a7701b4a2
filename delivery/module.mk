# delivery/: the sending side: DSN building, local (Maildir) delivery, and
# (coming) the SMTP client and the scheduler.
SRCS += $(wildcard delivery/*.c)
