/* The model a firmware image carries. The glue that `edgetool export --format c` appends
 * to emx-onnx-cgen's output defines these; common/null_model.c is the stand-in used
 * when no model is given (protocol tests, MLPerf-style harness bring-up). */
#ifndef EDGETOOL_MODEL_API_H
#define EDGETOOL_MODEL_API_H
#include <stdint.h>

extern const char edgetool_model_name[];
extern const uint32_t edgetool_input_bytes;  /* all inputs, concatenated, float32 LE */
extern const uint32_t edgetool_output_count; /* all outputs, concatenated, float32 */
extern uint8_t edgetool_input_buffer[];      /* edgetool_input_bytes, 8-byte aligned */
extern float edgetool_output_buffer[];       /* edgetool_output_count */
void edgetool_run(void);                     /* input buffer -> output buffer */

#endif
