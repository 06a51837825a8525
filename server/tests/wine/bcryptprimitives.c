/*
 * A stand-in for Windows' bcryptprimitives.dll, for running server.exe under Wine 8 in tests
 * ONLY (server/tests/windows_exe.rs builds it into its own copy of the published folder).
 *
 * Rust's standard library on Windows gets its random bytes (HashMap keys and the like) from
 * ProcessPrng in bcryptprimitives.dll. Windows 10 and later have it; Wine 8.0 does not, and the
 * exe then dies at load. This DLL exports just that function, on top of RtlGenRandom
 * (advapi32's SystemFunction036), which Wine has.
 *
 * Never ship it: on real Windows the system's own DLL must be used.
 *
 *   x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll bcryptprimitives.c \
 *       bcryptprimitives.def -ladvapi32
 */
#include <windows.h>

/* RtlGenRandom; declared here because ntsecapi.h only declares it under a macro name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Always TRUE on real Windows (it cannot fail); here it fails only if RtlGenRandom does. */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
