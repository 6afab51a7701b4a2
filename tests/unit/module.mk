# One cmocka program per tests/unit/<module>/test_<file>.c.
UNIT_TESTS += $(patsubst %.c,%,$(wildcard tests/unit/*/test_*.c))
