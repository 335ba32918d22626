# QEMU -M mps2-an386: Cortex-M4 with FPU.
CPU_FLAGS := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
BOARD_SRCS := boards/mps2-an386/board.c
