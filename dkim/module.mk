# dkim/: DKIM signing and verifying (canonicalization, tag lists, key sets,
# the public key cache, the incremental signer and verifier).
SRCS += $(wildcard dkim/*.c)
# The unit tests cross-check every signature made and every verification
# with libopendkim, in process.
$(BUILD)/tests/unit/dkim/%: TEST_LIBS += -lopendkim
# The benchmark compares with libopendkim's signing in the same run.
$(BUILD)/bench/ortoo-dkimbench: LIBS += -lopendkim
