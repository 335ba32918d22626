# ST NUCLEO-L476RG: Cortex-M4F. Built in CI, flashed by users (pyocd target stm32l476rg).
CPU_FLAGS := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
BOARD_SRCS := boards/nucleo-l476rg/board.c
