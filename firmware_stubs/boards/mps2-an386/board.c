/* QEMU's mps2-an386 (Cortex-M4, 25 MHz): CMSDK UART0 and SysTick.
 * QEMU does not emulate the DWT cycle counter (it reads 0), so time comes from SysTick on
 * the processor clock, extended to 64 bits by its wrap interrupt. Under `-icount shift=0`
 * one instruction is 1 ns of virtual time: ticks * 40 = emulated instructions.
 * Received bytes arrive by interrupt into a ring, and the idle loop sleeps in WFI: a
 * polling loop runs at ~30 M emulated instructions/s of MMIO, so virtual time (and every
 * protocol timeout) would crawl at 1/30 of real time; while the core sleeps, QEMU's
 * icount advances virtual time with real time. */
#include <stdint.h>
#include "board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00)
#define UART_STATE REG(UART0 + 0x04) /* bit0 TX full, bit1 RX full */
#define UART_CTRL REG(UART0 + 0x08)  /* bit0 TX enable, bit1 RX enable */
#define UART_INT REG(UART0 + 0x0C) /* write 1 to clear; bit1 RX */
#define UART_BAUDDIV REG(UART0 + 0x10)
#define NVIC_ISER0 REG(0xE000E100u)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define SYSCLK_HZ 25000000u

const char board_name[] = "mps2-an386";
const char board_timer[] = "systick";
static volatile uint64_t wraps;

static volatile uint8_t ring[256];
static volatile uint8_t head, tail;

void UART0RX_Handler(void) {
    UART_INT = 2u;
    while (UART_STATE & 2u) {
        uint8_t next = (uint8_t)(head + 1u);
        uint8_t byte = (uint8_t)UART_DATA;
        if (next != tail) { /* full ring: drop (the CRC layer or the host's retry recovers) */
            ring[head] = byte;
            head = next;
        }
    }
}

/* SysTick wraps every 1 ms so a core asleep in WFI wakes to notice protocol timeouts;
 * the handler costs ~20 of every 25 000 instructions, the same in every run. */
#define SYST_PERIOD (SYSCLK_HZ / 1000u)

void SysTick_Handler(void) { wraps += SYST_PERIOD; }

void board_init(void) {
    UART_BAUDDIV = SYSCLK_HZ / 115200u;
    UART_CTRL = 3u | 8u; /* TX, RX enable; bit 3: RX interrupt */
    NVIC_ISER0 = 1u;     /* IRQ 0 */
    SYST_RVR = SYST_PERIOD - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* enable, interrupt on wrap, processor clock */
}

int board_getc(void) {
    if (head == tail) return -1;
    int c = ring[tail];
    tail = (uint8_t)(tail + 1u);
    return c;
}

void board_idle(void) {
    __asm volatile("cpsid i");
    if (head == tail) __asm volatile("wfi"); /* woken by a byte or the SysTick wrap */
    __asm volatile("cpsie i");
}

void board_putc(char c) {
    while (UART_STATE & 1u) {
    }
    UART_DATA = (uint8_t)c;
}

uint64_t board_ticks(void) {
    uint64_t hi;
    uint32_t v;
    do { /* a wrap between the two reads shows up as a changed `wraps` */
        hi = wraps;
        v = SYST_CVR;
    } while (hi != wraps);
    return hi + (SYST_PERIOD - 1u - v);
}

uint32_t board_tick_hz(void) { return SYSCLK_HZ; }
