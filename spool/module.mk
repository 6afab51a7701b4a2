# spool/: segments, journal, group commit, recovery, scanning.
SRCS += $(wildcard spool/*.c)
