/*
 * Test-only: plays the ASP.NET Core Module's part in a Windows sign-in, under Wine.
 *
 * The module, for a request IIS authenticated with Windows Authentication, duplicates the
 * user's token into the backend process and sends the handle's value in hex in
 * MS-ASPNETCORE-WINAUTHTOKEN. This does the same with its own process token (the Wine user's):
 * it finds server.exe, duplicates the token into it, sends
 *
 *     GET <path> HTTP/1.1 with MS-ASPNETCORE-TOKEN and MS-ASPNETCORE-WINAUTHTOKEN
 *
 * to 127.0.0.1:<port>, prints the answer, then whether the handle is still open in server.exe
 * ("handle: closed" or "handle: still open"): the server must close it. The same probe, run
 * before the request ("before: still open"), shows that it can tell.
 *
 * Usage: winauth.exe <port> <pairing token> <path>
 * Never part of the published folder.
 */
#define _WIN32_WINNT 0x0A00
#include <winsock2.h>
#include <windows.h>
#include <tlhelp32.h>
#include <stdio.h>
#include <string.h>

static DWORD find_server(void) {
    PROCESSENTRY32 entry;
    entry.dwSize = sizeof(entry);
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
    if (snap == INVALID_HANDLE_VALUE) return 0;
    DWORD pid = 0;
    if (Process32First(snap, &entry)) {
        do {
            if (_stricmp(entry.szExeFile, "server.exe") == 0) pid = entry.th32ProcessID;
        } while (!pid && Process32Next(snap, &entry));
    }
    CloseHandle(snap);
    return pid;
}

/* What the handle value `theirs` names in server.exe now: our token object ("still open"), or
 * not ("closed"). The value alone says nothing: a closed handle's value is soon reused, and
 * under Wine the server's own process token is the same user's. */
static const char *probe(HANDLE server, HANDLE theirs, HANDLE own) {
    HANDLE copy;
    const char *state = "closed";
    if (DuplicateHandle(server, theirs, GetCurrentProcess(), &copy, 0, FALSE, DUPLICATE_SAME_ACCESS)) {
        /* Not in mingw's import library: looked up where Windows 10 (and Wine) export it. */
        typedef BOOL(WINAPI * compare_fn)(HANDLE, HANDLE);
        compare_fn compare =
            (compare_fn)(void *)GetProcAddress(GetModuleHandleA("kernelbase.dll"), "CompareObjectHandles");
        if (!compare) state = "unknown: no CompareObjectHandles";
        else if (compare(copy, own)) state = "still open";
        CloseHandle(copy);
    }
    return state;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: winauth.exe <port> <pairing token> <path>\n");
        return 2;
    }
    DWORD pid = find_server();
    if (!pid) { fprintf(stderr, "no server.exe running\n"); return 3; }
    HANDLE own;
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY | TOKEN_DUPLICATE | TOKEN_IMPERSONATE, &own)) {
        fprintf(stderr, "OpenProcessToken: %lu\n", GetLastError());
        return 4;
    }
    HANDLE server = OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid);
    if (!server) { fprintf(stderr, "OpenProcess: %lu\n", GetLastError()); return 5; }
    HANDLE theirs;
    if (!DuplicateHandle(GetCurrentProcess(), own, server, &theirs, 0, FALSE, DUPLICATE_SAME_ACCESS)) {
        fprintf(stderr, "DuplicateHandle: %lu\n", GetLastError());
        return 6;
    }

    /* The probe's own check: before the request, the handle is open in server.exe. */
    printf("before: %s\n", probe(server, theirs, own));

    WSADATA wsa;
    WSAStartup(MAKEWORD(2, 2), &wsa);
    SOCKET s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        fprintf(stderr, "connect: %d\n", WSAGetLastError());
        return 7;
    }
    char request[1024];
    int n = snprintf(request, sizeof(request),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nMS-ASPNETCORE-TOKEN: %s\r\n"
                     "MS-ASPNETCORE-WINAUTHTOKEN: %llx\r\nConnection: close\r\n\r\n",
                     argv[3], argv[1], argv[2], (unsigned long long)(ULONG_PTR)theirs);
    send(s, request, n, 0);
    char buf[4096];
    int got;
    while ((got = recv(s, buf, sizeof(buf), 0)) > 0) fwrite(buf, 1, got, stdout);
    closesocket(s);
    printf("\n");

    /* The answer is complete, so the server is done with the handle. */
    printf("handle: %s\n", probe(server, theirs, own));
    fflush(stdout);
    return 0;
}
