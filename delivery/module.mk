# delivery/: the sending side: DSN building, and (coming) the SMTP client,
# the scheduler and local delivery.
SRCS += $(wildcard delivery/*.c)
