# delivery/: the sending side (local Maildir delivery so far).
SRCS += $(wildcard delivery/*.c)
