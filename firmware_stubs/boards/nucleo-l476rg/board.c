/* ST NUCLEO-L476RG (STM32L476RG, Cortex-M4F, 1 MB flash, 96 KB SRAM1 used as RAM):
 * USART2 on PA2/PA3 is the ST-LINK virtual COM port (/dev/ttyACM0 on the host), 115200 8N1.
 * The core runs from MSI switched to 48 MHz (no crystal, no PLL needed); time is the DWT
 * cycle counter (real cycles), extended to 64 bits on every read. Flash with pyocd
 * (`pyocd flash -t stm32l476rg firmware.elf`) or the ST-LINK mass-storage drive. */
#include <stdint.h>
#include "board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define FLASH_ACR REG(0x40022000u)
#define RCC_CR REG(0x40021000u)
#define RCC_AHB2ENR REG(0x4002104Cu)
#define RCC_APB1ENR1 REG(0x40021058u)
#define GPIOA_MODER REG(0x48000000u)
#define GPIOA_AFRL REG(0x48000020u)
#define USART2 0x40004400u
#define USART_CR1 REG(USART2 + 0x00)
#define USART_BRR REG(USART2 + 0x0C)
#define USART_ISR REG(USART2 + 0x1C) /* bit5 RXNE, bit7 TXE, bit3 ORE */
#define USART_ICR REG(USART2 + 0x20)
#define USART_RDR REG(USART2 + 0x24)
#define USART_TDR REG(USART2 + 0x28)
#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define CORE_HZ 48000000u

const char board_name[] = "nucleo-l476rg";
const char board_timer[] = "dwt";
static uint64_t high;
static uint32_t last;

void SysTick_Handler(void) {}

void board_init(void) {
    FLASH_ACR = (FLASH_ACR & ~7u) | 2u; /* 2 wait states before raising the clock */
    while ((FLASH_ACR & 7u) != 2u) {
    }
    RCC_CR = (RCC_CR & ~0xF0u) | (11u << 4) | (1u << 3); /* MSIRANGE 11 = 48 MHz, MSIRGSEL */
    while (!(RCC_CR & 2u)) { /* MSIRDY */
    }
    RCC_AHB2ENR |= 1u;         /* GPIOA */
    RCC_APB1ENR1 |= 1u << 17;  /* USART2 */
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4); /* PA2, PA3 alternate */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8);  /* AF7 = USART2 */
    USART_BRR = (CORE_HZ + 57600u) / 115200u;
    USART_CR1 = (1u << 3) | (1u << 2) | 1u; /* TE, RE, UE */
    DEMCR |= 1u << 24;                      /* TRCENA */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
}

int board_getc(void) {
    uint32_t isr = USART_ISR;
    if (isr & (1u << 3)) USART_ICR = 1u << 3; /* overrun: clear, the CRC layer recovers */
    if (!(isr & (1u << 5))) return -1;
    return (int)(USART_RDR & 0xFFu);
}

void board_idle(void) {} /* polling: a real core runs the loop at full speed */

void board_putc(char c) {
    while (!(USART_ISR & (1u << 7))) {
    }
    USART_TDR = (uint8_t)c;
}

uint64_t board_ticks(void) {
    /* Read at least every 89 s (2^32 cycles at 48 MHz): the bench loop does. */
    uint32_t now = DWT_CYCCNT;
    if (now < last) high += 1ull << 32;
    last = now;
    return high | now;
}

uint32_t board_tick_hz(void) { return CORE_HZ; }
