/*
 * ctor — an ELF constructor and no entry symbol.
 *
 * The loader must refuse it without dlopen, so the constructor never runs.
 * The constructor leaves evidence that it ran: it creates the file named by
 * $SERPENS_TEST_CTOR_MARKER.
 */
#include <stdio.h>
#include <stdlib.h>

__attribute__((constructor)) static void ctor_leave_marker(void)
{
    const char *marker = getenv("SERPENS_TEST_CTOR_MARKER");
    FILE *f = NULL;
    if (marker == NULL) {
        return;
    }
    f = fopen(marker, "w");
    if (f != NULL) {
        fclose(f);
    }
}
