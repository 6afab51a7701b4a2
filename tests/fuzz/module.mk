# tests/fuzz/: libFuzzer targets, one per parser, built with clang and
# ASan+UBSan.  Each target #includes the source it fuzzes, so it does not
# depend on the library build.
#
#   make fuzz-bins                 build build/fuzz/fuzz_*
#   make fuzz-run [FUZZ_SECONDS=30]  run each target for FUZZ_SECONDS on its
#                                  corpus in build/fuzz/corpus/<target>
FUZZ_CC := clang
FUZZ_DIR := build/fuzz
FUZZ_SECONDS ?= 30
FUZZ_CFLAGS := -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -I. -g -O1 \
               -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
               -fno-sanitize-recover=undefined
FUZZ_BINS := $(FUZZ_DIR)/fuzz_smtp_parse $(FUZZ_DIR)/fuzz_config $(FUZZ_DIR)/fuzz_dkim_sign \
             $(FUZZ_DIR)/fuzz_maildrop $(FUZZ_DIR)/fuzz_aliases $(FUZZ_DIR)/fuzz_srs \
             $(FUZZ_DIR)/fuzz_spf_record $(FUZZ_DIR)/fuzz_dmarc \
             $(FUZZ_DIR)/fuzz_smtp_reply $(FUZZ_DIR)/fuzz_metrics_http \
             $(FUZZ_DIR)/fuzz_dkim_verify

$(FUZZ_DIR)/fuzz_smtp_parse: tests/fuzz/fuzz_smtp_parse.c core/smtp_parse.c core/smtp_parse.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $<

$(FUZZ_DIR)/fuzz_smtp_reply: tests/fuzz/fuzz_smtp_reply.c delivery/smtp_reply.c delivery/smtp_reply.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $<

$(FUZZ_DIR)/fuzz_config: tests/fuzz/fuzz_config.c core/config.c core/config.h resolver/names.c delivery/route.c io/log.c \
                         io/text.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< resolver/names.c delivery/route.c io/log.c -linih

$(FUZZ_DIR)/fuzz_dkim_sign: tests/fuzz/fuzz_dkim_sign.c dkim/canon.c dkim/keys.c dkim/sign.c \
                            dkim/header.c dkim/canon.h dkim/keys.h dkim/sign.h io/log.c io/metrics.c \
                            io/text.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< -lssl -lcrypto -lsodium

$(FUZZ_DIR)/fuzz_dkim_verify: tests/fuzz/fuzz_dkim_verify.c dkim/canon.c dkim/keys.c dkim/pubkey.c \
                              dkim/tags.c dkim/verify.c dkim/header.c dkim/canon.h dkim/keys.h \
                              dkim/pubkey.h dkim/tags.h dkim/verify.h io/log.c io/metrics.c \
                              io/text.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< -lssl -lcrypto -lsodium

$(FUZZ_DIR)/fuzz_maildrop: tests/fuzz/fuzz_maildrop.c core/maildrop_format.c core/maildrop.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $<

$(FUZZ_DIR)/fuzz_aliases: tests/fuzz/fuzz_aliases.c core/aliases.c core/aliases.h core/smtp_parse.c \
                          io/text.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $<

$(FUZZ_DIR)/fuzz_srs: tests/fuzz/fuzz_srs.c core/srs.c core/srs.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< -lcrypto

$(FUZZ_DIR)/fuzz_spf_record: tests/fuzz/fuzz_spf_record.c resolver/spf_record.c resolver/spf_record.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $<

$(FUZZ_DIR)/fuzz_dmarc: tests/fuzz/fuzz_dmarc.c core/dmarc.c core/dmarc.h core/psl.c core/psl.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $<

$(FUZZ_DIR)/fuzz_metrics_http: tests/fuzz/fuzz_metrics_http.c core/metrics_http_parse.c \
                               core/metrics_http.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $<

.PHONY: fuzz-bins fuzz-run
fuzz-bins: $(FUZZ_BINS)

fuzz-run: fuzz-bins
	@set -e; for f in $(FUZZ_BINS); do \
	    n=$$(basename $$f); mkdir -p $(FUZZ_DIR)/corpus/$$n; echo "== $$n"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_DIR)/$$n- $(FUZZ_DIR)/corpus/$$n; \
	done
