# bench/: the load generator and the smart sink (issue 3).
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS += $(patsubst %.c,%,$(BENCH_SRCS))
$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LIBS)
