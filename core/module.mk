# core/: configuration, SMTP parsing and sessions, users and AUTH, the
# server's reactors and listeners, the CLI.  core/main.c holds main().
SRCS += $(filter-out core/main.c,$(wildcard core/*.c))
MAIN_SRCS += core/main.c
