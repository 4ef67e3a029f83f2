/*
 * test_kernels.c - on-target kernel tests: the firmware's engine and kernels, on the board, against
 * golden vectors computed by the host reference (golden.h). Run with `pio test -e <env>`.
 *
 * Output, one line per event, read by test/test_custom_runner.py (and by renode/cqtf_stm32f4.robot):
 *   cqtf-test: begin <suite> <number of cases>
 *   cqtf-test: PASS <case>
 *   cqtf-test: FAIL <case> <file>:<line> <what differs>
 *   cqtf-test: end <passed> passed <failed> failed
 * Under QEMU (CQTF_TEST_SEMIHOSTING, set by the runner) the firmware then ends the emulator with
 * exit status 0 when every case passed, 1 otherwise. On a real board it idles after the last line.
 */
#include <stdint.h>

#include "board.h"
#include "cqtf_model.h" /* the compiled-in model: golden/cqtf_model.h, the case with the largest tensors */
#include "engine.h"
#include "golden.h"
#include "golden_limits.h"
#include "kernels/cqtf_requant.h"

/* The engine's buffers are sized from the compiled-in model: it must be the golden one
 * (test/test_custom_runner.py puts golden/ first on the include path of test builds). */
typedef char cqtf_golden_model_compiled_in[(CQTF_MODEL_TENSOR_MAX >= CQTF_GOLDEN_TENSOR_MAX) ? 1 : -1];

#define TEST_PREFIX "cqtf-test: "

static int8_t output[CQTF_GOLDEN_TENSOR_MAX];

static void put_str(const char *s)
{
    uint32_t n = 0;

    while (s[n] != '\0') {
        ++n;
    }
    board_uart_write((const uint8_t *)s, n);
}

static void put_int(int32_t value)
{
    char digits[12];
    uint32_t magnitude = (value < 0) ? 0u - (uint32_t)value : (uint32_t)value;
    int i = (int)sizeof(digits) - 1;

    digits[i] = '\0';
    do {
        digits[--i] = (char)('0' + (magnitude % 10u));
        magnitude /= 10u;
    } while (magnitude != 0u);
    if (value < 0) {
        digits[--i] = '-';
    }
    put_str(&digits[i]);
}

/* A failure names the source line that detected it, as test frameworks do. */
static void report_fail(const char *name, int line)
{
    put_str(TEST_PREFIX "FAIL ");
    put_str(name);
    put_str(" " __FILE__ ":");
    put_int(line);
    put_str(" ");
}

/* Runs layers 0..k of the case's model for each input; the first differing byte fails the case. */
static int run_case(const cqtf_golden_case_t *c)
{
    const int8_t *expected = c->expected;
    uint32_t n, k, i;

    for (n = 0; n < c->num_inputs; ++n) {
        const int8_t *input = c->inputs + n * c->input_size;

        for (k = 0; k < c->num_layers; ++k) {
            uint16_t size = 0;
            const cqtf_status_t status = cqtf_engine_run(c->model, input, (uint8_t)k, output, &size);

            if (status != CQTF_OK || size != c->layer_sizes[k]) {
                report_fail(c->name, __LINE__);
                put_str("input ");
                put_int((int32_t)n);
                put_str(" layer ");
                put_int((int32_t)k);
                put_str(": engine status ");
                put_int((int32_t)status);
                put_str(", output bytes ");
                put_int((int32_t)size);
                put_str(" expected ");
                put_int((int32_t)c->layer_sizes[k]);
                put_str("\n");
                return 0;
            }
            for (i = 0; i < size; ++i) {
                if (output[i] != expected[i]) {
                    report_fail(c->name, __LINE__);
                    put_str("input ");
                    put_int((int32_t)n);
                    put_str(" layer ");
                    put_int((int32_t)k);
                    put_str(" element ");
                    put_int((int32_t)i);
                    put_str(": device ");
                    put_int(output[i]);
                    put_str(" host ");
                    put_int(expected[i]);
                    put_str("\n");
                    return 0;
                }
            }
            expected += size;
        }
    }
    put_str(TEST_PREFIX "PASS ");
    put_str(c->name);
    put_str("\n");
    return 1;
}

static int run_requant(void)
{
    static const char name[] = "requantize_edges";
    uint32_t r;

    for (r = 0; r < cqtf_golden_num_requant; ++r) {
        const int32_t *row = cqtf_golden_requant + 4u * r;
        const int32_t got = cqtf_requantize_fn(row[0], row[1], row[2]);

        if (got != row[3]) {
            report_fail(name, __LINE__);
            put_str("acc ");
            put_int(row[0]);
            put_str(" multiplier ");
            put_int(row[1]);
            put_str(" shift ");
            put_int(row[2]);
            put_str(": device ");
            put_int(got);
            put_str(" host ");
            put_int(row[3]);
            put_str("\n");
            return 0;
        }
    }
    put_str(TEST_PREFIX "PASS ");
    put_str(name);
    put_str("\n");
    return 1;
}

/* Ends QEMU through Arm semihosting SYS_EXIT (0x18): reason ADP_Stopped_ApplicationExit (0x20026)
 * makes QEMU exit with status 0, any other reason (here RunTimeErrorUnknown, 0x20023) with 1. */
static void test_exit(int failed)
{
#ifdef CQTF_TEST_SEMIHOSTING
    register uint32_t op __asm("r0") = 0x18u;
    register uint32_t reason __asm("r1") = failed ? 0x20023u : 0x20026u;

    __asm volatile("bkpt 0xab" : "+r"(op) : "r"(reason) : "memory");
#else
    (void)failed;
#endif
}

int main(void)
{
    uint32_t i, passed = 0, failed = 0;

    board_init();
    put_str(TEST_PREFIX "begin kernels ");
    put_int((int32_t)(cqtf_golden_num_cases + 1u));
    put_str("\n");
    for (i = 0; i < cqtf_golden_num_cases; ++i) {
        if (run_case(&cqtf_golden_cases[i])) {
            ++passed;
        } else {
            ++failed;
        }
    }
    if (run_requant()) {
        ++passed;
    } else {
        ++failed;
    }
    put_str(TEST_PREFIX "end ");
    put_int((int32_t)passed);
    put_str(" passed ");
    put_int((int32_t)failed);
    put_str(" failed\n");
    test_exit(failed != 0u);
    return failed != 0u;
}
