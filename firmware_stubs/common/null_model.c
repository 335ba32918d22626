/* Stand-in model for images built without MODEL=: 128 input bytes -> 10 floats, where
 * output i = sum of the bytes at positions j with j % 10 == i, divided by 255. The host
 * computes the same, so protocol tests have a parity check without a model export. */
#include "model_api.h"

const char edgetool_model_name[] = "null";
const uint32_t edgetool_input_bytes = 128;
const uint32_t edgetool_output_count = 10;
uint8_t edgetool_input_buffer[128] __attribute__((aligned(8)));
float edgetool_output_buffer[10];

void edgetool_run(void) {
    for (uint32_t i = 0; i < 10; i++) edgetool_output_buffer[i] = 0.0f;
    for (uint32_t j = 0; j < 128; j++) edgetool_output_buffer[j % 10] += edgetool_input_buffer[j];
    for (uint32_t i = 0; i < 10; i++) edgetool_output_buffer[i] /= 255.0f;
}
