/* pbx.sip._refusal: the C twin of pbx/sip/refusal.py's scan_new_request and refusal.
 *
 * Overload control refuses most new requests while it sheds (issue 14: offered five times what it holds, four
 * refusals for each exchange admitted), so the scan of a new request's raw bytes and the 503 made from them run
 * for most datagrams read. In Python they make ~35 C calls and allocate a lowered copy and ten slices per
 * request: about half the CPU of a refusal all in (socket read and sendto included). Here they are one call each.
 *
 * The Python functions in pbx/sip/refusal.py are the reference: these give exactly what they give for every
 * input (tests/sip/test_refusal_speedups.py checks it with hypothesis), and are used only when this module was
 * built (an optional extension: without a compiler the Python ones serve). Everything read is bounds-checked
 * against the datagram's length; nothing is written but the new objects returned.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define STACK_LOW 4096 /* header blocks up to this size are lowered on the stack */

static inline unsigned char
ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* RFC 3261 25.1 token characters (the Python module's _TOKEN). */
static inline int
is_token(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '!' || c == '%' || c == '*' || c == '_' || c == '+' || c == '`' || c == '\'' ||
           c == '~';
}

/* A Via parameter value's characters in the Python module's _TOP_VIA: [^;,\s] (\s: space, \t\n\r\f\v). */
static inline int
is_value(unsigned char c)
{
    return c != ';' && c != ',' && c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v';
}

static inline int
is_host(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

/* bytes.find(needle, start, stop) within buf[0:len] (start, stop already >= 0): the index or -1. */
static Py_ssize_t
find(const char *buf, Py_ssize_t len, const char *needle, Py_ssize_t size, Py_ssize_t start, Py_ssize_t stop)
{
    if (stop > len)
        stop = len;
    if (start < 0 || start > stop || stop - start < size)
        return -1;
    const char *at = memmem(buf + start, (size_t)(stop - start), needle, (size_t)size);
    return at == NULL ? -1 : (Py_ssize_t)(at - buf);
}

#define FIND(low, len, lit, start, stop) find((low), (len), (lit), (Py_ssize_t)(sizeof(lit) - 1), (start), (stop))

/* bytes.count(needle) over buf[0:len] (non-overlapping). */
static Py_ssize_t
count(const char *buf, Py_ssize_t len, const char *needle, Py_ssize_t size)
{
    Py_ssize_t n = 0, at = 0;
    for (;;) {
        at = find(buf, len, needle, size, at, len);
        if (at < 0)
            return n;
        n++;
        at += size;
    }
}

static inline int
is_fold(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* The top Via's value data[top:stop] against _TOP_VIA: "[ \t]*SIP/2.0/UDP host[:port];params" with a branch
 * param of token characters. Sets the spans of host, port (port_at < 0 when absent) and branch; 0 when it does
 * not match. */
static int
match_top_via(const unsigned char *d, Py_ssize_t top, Py_ssize_t stop, Py_ssize_t *host_at, Py_ssize_t *host_end,
              Py_ssize_t *port_at, Py_ssize_t *port_end, Py_ssize_t *branch_at, Py_ssize_t *branch_end)
{
    static const char prefix[] = "sip/2.0/udp ";
    Py_ssize_t p = top;
    while (p < stop && (d[p] == ' ' || d[p] == '\t'))
        p++;
    if (stop - p < (Py_ssize_t)(sizeof(prefix) - 1))
        return 0;
    for (size_t i = 0; i < sizeof(prefix) - 1; i++)
        if (ascii_lower(d[p + (Py_ssize_t)i]) != (unsigned char)prefix[i])
            return 0;
    p += (Py_ssize_t)(sizeof(prefix) - 1);
    *host_at = p;
    while (p < stop && is_host(d[p]))
        p++;
    if (p == *host_at)
        return 0;
    *host_end = p;
    *port_at = *port_end = -1;
    if (p < stop && d[p] == ':') {
        Py_ssize_t digits = ++p;
        while (p < stop && d[p] >= '0' && d[p] <= '9')
            p++;
        if (p == digits || p - digits > 5)
            return 0;
        *port_at = digits;
        *port_end = p;
    }
    *branch_at = -1;
    while (p < stop && d[p] == ';') {
        Py_ssize_t name = ++p;
        while (p < stop && is_token(d[p]))
            p++;
        if (p == name)
            return 0;
        Py_ssize_t name_end = p, value = -1;
        if (p < stop && d[p] == '=') {
            value = ++p;
            while (p < stop && is_value(d[p]))
                p++;
        }
        if (*branch_at < 0 && value > name && name_end - name == 6 && value < p) {
            static const char branch[] = "branch";
            int same = 1;
            for (int i = 0; i < 6; i++)
                if (ascii_lower(d[name + i]) != (unsigned char)branch[i])
                    same = 0;
            Py_ssize_t q = value;
            while (same && q < p && is_token(d[q]))
                q++;
            if (same && q == p) {
                *branch_at = value;
                *branch_end = p;
            }
        }
    }
    while (p < stop && (d[p] == ' ' || d[p] == '\t'))
        p++;
    return p == stop && *branch_at >= 0;
}

static PyObject *
span(Py_ssize_t start, Py_ssize_t end)
{
    return Py_BuildValue("(nn)", start, end);
}

/* The scan proper, on `low` (data[:length] lower-cased). A new reference, Py_None, or NULL with an exception. */
static PyObject *
scan(const unsigned char *d, Py_ssize_t n, const char *low, Py_ssize_t length, PyObject *method)
{
    Py_ssize_t to = FIND(low, length, "\r\nto:", 0, length);
    if (to < 0)
        to = FIND(low, length, "\r\nt:", 0, length);
    Py_ssize_t from = FIND(low, length, "\r\nfrom:", 0, length);
    if (from < 0)
        from = FIND(low, length, "\r\nf:", 0, length);
    Py_ssize_t call_id = FIND(low, length, "\r\ncall-id:", 0, length);
    if (call_id < 0)
        call_id = FIND(low, length, "\r\ni:", 0, length);
    Py_ssize_t cseq = FIND(low, length, "\r\ncseq:", 0, length);
    if (to < 0 || from < 0 || call_id < 0 || cseq < 0 || count(low, length, "\r\nt", 3) != 1)
        Py_RETURN_NONE;
    /* Each found line ends with a CRLF inside `low` (it ends with the last header line's): the ends below
     * are at most length - 2, and the bytes after them (data[end + 2] and so on) are inside the datagram,
     * whose blank line follows. The checks say so anyway. */
    Py_ssize_t to_end = FIND(low, length, "\r\n", to + 2, length);
    Py_ssize_t from_end = FIND(low, length, "\r\n", from + 2, length);
    Py_ssize_t call_id_end = FIND(low, length, "\r\n", call_id + 2, length);
    Py_ssize_t cseq_end = FIND(low, length, "\r\n", cseq + 2, length);
    if (to_end < 0 || from_end < 0 || call_id_end < 0 || cseq_end < 0 || length + 2 > n)
        Py_RETURN_NONE;
    from_end += 2;
    call_id_end += 2;
    cseq_end += 2;
    if (FIND(low, length, "tag", to, to_end) >= 0 || is_fold(d[to_end + 2]) || is_fold(d[from_end]) ||
        is_fold(d[call_id_end]) || is_fold(d[cseq_end]))
        Py_RETURN_NONE;
    /* Via lines: every line starting with "v" must be one ("Via:" or "v:"). */
    Py_ssize_t vias_count = count(low, length, "\r\nv", 3);
    if (vias_count == 0)
        Py_RETURN_NONE;
    PyObject *vias = PyTuple_New(vias_count);
    if (vias == NULL)
        return NULL;
    Py_ssize_t at = 0, top = 0, line_end = 0;
    for (Py_ssize_t i = 0; i < vias_count; i++) {
        Py_ssize_t start = FIND(low, length, "\r\nv", at, length), value;
        if (start < 0 || start + 3 >= length)
            goto none;
        if (FIND(low, length, "ia:", start + 3, start + 6) == start + 3)
            value = start + 6;
        else if (low[start + 3] == ':')
            value = start + 4;
        else
            goto none;
        at = FIND(low, length, "\r\n", value, length);
        if (at < 0 || is_fold(d[at + 2]))
            goto none;
        if (i == 0) {
            top = value;
            line_end = at;
        }
        PyObject *item = span(start + 2, at + 2);
        if (item == NULL) {
            Py_DECREF(vias);
            return NULL;
        }
        PyTuple_SET_ITEM(vias, i, item);
    }
    Py_ssize_t host_at = 0, host_end = 0, port_at = -1, port_end = -1, branch_at = -1, branch_end = -1;
    if (!match_top_via(d, top, line_end, &host_at, &host_end, &port_at, &port_end, &branch_at, &branch_end) ||
        FIND(low, length, ";maddr", top, line_end) >= 0 || branch_end - branch_at < 7 ||
        memcmp(d + branch_at, "z9hG4bK", 7) != 0)
        goto none;
    /* `low` holds the host lower-cased, as host.lower() gives it */
    PyObject *host_text = PyUnicode_DecodeASCII(low + host_at, host_end - host_at, NULL);
    if (host_text == NULL) {
        Py_DECREF(vias);
        return NULL;
    }
    PyObject *port;
    if (port_at < 0) {
        port = Py_NewRef(Py_None);
    } else {
        long number = 0;
        for (Py_ssize_t i = port_at; i < port_end; i++)
            number = number * 10 + (d[i] - '0');
        port = PyLong_FromLong(number);
    }
    PyObject *branch = PyUnicode_DecodeASCII((const char *)d + branch_at, branch_end - branch_at, NULL);
    PyObject *rport = PyBool_FromLong(FIND(low, length, ";rport", top, line_end) >= 0);
    PyObject *credentials = PyBool_FromLong(FIND(low, length, "authorization", 0, length) >= 0);
    PyObject *result = NULL;
    if (port != NULL && branch != NULL)
        result = Py_BuildValue("(ONNNNNO(nn)(nn)(nn)(nn))", method, branch, host_text, port, rport, credentials,
                               vias, to + 2, to_end, from + 2, from_end, call_id + 2, call_id_end, cseq + 2,
                               cseq_end);
    else {
        Py_XDECREF(branch);
        Py_DECREF(host_text);
        Py_XDECREF(port);
        Py_DECREF(rport);
        Py_DECREF(credentials);
    }
    Py_DECREF(vias);
    return result;
none:
    Py_DECREF(vias);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(scan_new_request_doc,
             "scan_new_request(data, methods)\n--\n\n"
             "pbx.sip.refusal.scan_new_request_py in C: the same result for every input.");

static PyObject *
scan_new_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "scan_new_request(data, methods) takes 2 arguments");
        return NULL;
    }
    PyObject *data = args[0], *methods = args[1];
    if (!PyBytes_Check(data) || !PyDict_Check(methods)) {
        PyErr_SetString(PyExc_TypeError, "scan_new_request needs bytes and a dict");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    const unsigned char *space = memchr(d, ' ', (size_t)(n < 20 ? n : 20));
    if (space == NULL || space == d)
        Py_RETURN_NONE;
    PyObject *word = PyBytes_FromStringAndSize((const char *)d, space - d);
    if (word == NULL)
        return NULL;
    PyObject *method = PyDict_GetItemWithError(methods, word); /* borrowed */
    Py_DECREF(word);
    if (method == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (method == Py_None)
        Py_RETURN_NONE; /* as methods.get(...) giving None */
    Py_INCREF(method);
    Py_ssize_t end = FIND((const char *)d, n, "\r\n\r\n", 0, n);
    PyObject *result;
    if (end < 0) {
        result = Py_NewRef(Py_None);
    } else {
        Py_ssize_t length = end + 2;
        char stack[STACK_LOW];
        char *low = length <= STACK_LOW ? stack : PyMem_Malloc((size_t)length);
        if (low == NULL) {
            Py_DECREF(method);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < length; i++)
            low[i] = (char)ascii_lower(d[i]);
        result = scan(d, n, low, length, method);
        if (low != stack)
            PyMem_Free(low);
    }
    Py_DECREF(method);
    return result;
}

/* raw[index] as a (start, end) pair of ints within 0 <= start <= end <= n. */
static int
get_span(PyObject *pair, Py_ssize_t n, Py_ssize_t *start, Py_ssize_t *end)
{
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "a span must be a (start, end) tuple");
        return -1;
    }
    *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
    if (*start == -1 && PyErr_Occurred())
        return -1;
    *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 1));
    if (*end == -1 && PyErr_Occurred())
        return -1;
    if (*start < 0 || *start > *end || *end > n) {
        PyErr_SetString(PyExc_ValueError, "a span outside the datagram");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(refusal_doc,
             "refusal(raw, data, status_line, to_tag, tail)\n--\n\n"
             "pbx.sip.refusal.refusal_py in C: the same bytes for what scan_new_request found.");

static PyObject *
refusal(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "refusal(raw, data, status_line, to_tag, tail) takes 5 arguments");
        return NULL;
    }
    PyObject *raw = args[0], *data = args[1];
    for (int i = 1; i < 5; i++)
        if (!PyBytes_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "refusal needs bytes after raw");
            return NULL;
        }
    if (!PyTuple_Check(raw) || PyTuple_GET_SIZE(raw) != 11 || !PyTuple_Check(PyTuple_GET_ITEM(raw, 6))) {
        PyErr_SetString(PyExc_TypeError, "raw must be what scan_new_request found");
        return NULL;
    }
    const char *d = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    PyObject *vias = PyTuple_GET_ITEM(raw, 6);
    Py_ssize_t vias_count = PyTuple_GET_SIZE(vias);
    if (vias_count == 0) {
        PyErr_SetString(PyExc_ValueError, "no Via");
        return NULL;
    }
    Py_ssize_t spans[4][2]; /* from, to, call-id, cseq: raw[8], raw[7], raw[9], raw[10] */
    static const int order[4] = {8, 7, 9, 10};
    for (int i = 0; i < 4; i++)
        if (get_span(PyTuple_GET_ITEM(raw, order[i]), n, &spans[i][0], &spans[i][1]) < 0)
            return NULL;
    PyObject *status = args[2], *tag = args[3], *tail = args[4];
    Py_ssize_t size = PyBytes_GET_SIZE(status) + PyBytes_GET_SIZE(tag) + PyBytes_GET_SIZE(tail) + 7;
    for (int i = 0; i < 4; i++)
        size += spans[i][1] - spans[i][0];
    for (Py_ssize_t i = 0; i < vias_count; i++) {
        Py_ssize_t start, end;
        if (get_span(PyTuple_GET_ITEM(vias, i), n, &start, &end) < 0)
            return NULL;
        size += end - start;
    }
    PyObject *answer = PyBytes_FromStringAndSize(NULL, size);
    if (answer == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(answer);
#define PUT(src, len)                                                                                          \
    do {                                                                                                       \
        memcpy(out, (src), (size_t)(len));                                                                     \
        out += (len);                                                                                          \
    } while (0)
    PUT(PyBytes_AS_STRING(status), PyBytes_GET_SIZE(status));
    for (Py_ssize_t i = 0; i < vias_count; i++) {
        Py_ssize_t start, end;
        get_span(PyTuple_GET_ITEM(vias, i), n, &start, &end); /* checked above */
        PUT(d + start, end - start);
    }
    PUT(d + spans[0][0], spans[0][1] - spans[0][0]);
    PUT(d + spans[1][0], spans[1][1] - spans[1][0]);
    PUT(";tag=", 5);
    PUT(PyBytes_AS_STRING(tag), PyBytes_GET_SIZE(tag));
    PUT("\r\n", 2);
    PUT(d + spans[2][0], spans[2][1] - spans[2][0]);
    PUT(d + spans[3][0], spans[3][1] - spans[3][0]);
    PUT(PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail));
#undef PUT
    return answer;
}

static PyMethodDef methods[] = {
    {"scan_new_request", (PyCFunction)(void (*)(void))scan_new_request, METH_FASTCALL, scan_new_request_doc},
    {"refusal", (PyCFunction)(void (*)(void))refusal, METH_FASTCALL, refusal_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "pbx.sip._refusal",
    .m_doc = "C twins of pbx.sip.refusal's scan and 503.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__refusal(void)
{
    return PyModule_Create(&module);
}
