# dkim/: signing and verification (not yet built).
SRCS += $(wildcard dkim/*.c)
