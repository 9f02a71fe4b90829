/* fuzz.h - what every libFuzzer target in tests/fuzz/ shares. */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken property is a crash, so libFuzzer keeps the input. */
#define REQUIRE(c)                                                                        \
	do {                                                                              \
		if (!(c))                                                                 \
			__builtin_trap();                                                 \
	} while (0)

#endif
