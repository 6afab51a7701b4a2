# resolver/: libunbound-based DNS (not yet built).
SRCS += $(wildcard resolver/*.c)
