# dkim/: DKIM signing (canonicalization, key sets, the incremental signer).
SRCS += $(wildcard dkim/*.c)
# libopendkim verifies inbound signatures (dkim/verify.c).
LIBS += -lopendkim
# The unit tests cross-check every signature with libopendkim, in process.
$(BUILD)/tests/unit/dkim/%: TEST_LIBS += -lopendkim
# The benchmark compares with libopendkim's signing in the same run.
$(BUILD)/bench/ortoo-dkimbench: LIBS += -lopendkim
