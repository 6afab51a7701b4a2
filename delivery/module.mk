# delivery/: the sending side: SMTP client (reply parser, client state
# machine), its connection pool.
SRCS += $(wildcard delivery/*.c)
