# core/: configuration, SMTP parsing and sessions, users and AUTH, the
# server's reactors and listeners.
SRCS += $(wildcard core/*.c)
