# resolver/: DNS lookups on the reactor (libunbound, DNSSEC), answer cache.
SRCS += $(wildcard resolver/*.c)
