# cli/: the ortoo command (subcommands over core/, spool/ and io/).
# cli/main.c holds main(); the rest goes into the library so that unit tests
# can drive the subcommands.
SRCS += $(filter-out cli/main.c,$(wildcard cli/*.c))
MAIN_SRCS += cli/main.c
