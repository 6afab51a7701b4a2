# bench/: the load generator and the smart sink (issue 3).
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS += $(patsubst %.c,%,$(BENCH_SRCS))
$(BUILD)/bench/%: bench/%.c $(BUILD)/libortoo.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libortoo.a $(LDFLAGS) $(LIBS)
