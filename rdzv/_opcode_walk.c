/* The opcode check of rdzv.state (_check_opcodes) in C: the same walk, the same refusals.
 *
 * walk(data, kinds, arguments, nesting_limit, max_operations, payloads) -> (code, detail)
 *
 * The caller has checked the PROTO header; the walk starts at the first byte.
 *
 * kinds and arguments are rdzv.state's 256-entry tables (each opcode's kind and argument width),
 * passed as bytes so that the tables have one home; the kind numbers below are rdzv.state's, and
 * rdzv.state checks KINDS against its own before using this module. code is one of OUTCOMES;
 * detail is the opcode for "unsupported". payloads, a list or None, receives the offset of every
 * 10-byte SHORT_BINBYTES argument. Python's walk raises IndexError where this one says
 * "truncated" (the position reached the end) or "malformed" (it had not): the position is
 * compared at the same point of each step, so both name the same bytes the same way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { UNSUPPORTED, GET, MEMOIZE, FIXED, COUNTED, EMPTY, MARK, EXTEND, BUILD, CALL, TUPLE_N, FROM_MARK,
       SETITEM, NEWOBJ_EX, STACK_GLOBAL, PUT, FRAME, GLOBAL, POP, POP_MARK, DUP, PROTO, STOP, KIND_COUNT };
static const char *KIND_NAMES[KIND_COUNT] = {
    "UNSUPPORTED", "GET", "MEMOIZE", "FIXED", "COUNTED", "EMPTY", "MARK", "EXTEND", "BUILD", "CALL",
    "TUPLE_N", "FROM_MARK", "SETITEM", "NEWOBJ_EX", "STACK_GLOBAL", "PUT", "FRAME", "GLOBAL", "POP",
    "POP_MARK", "DUP", "PROTO", "STOP"};

enum { OK, TOO_DEEP, TRUNCATED, MALFORMED, MEMO_OUT_OF_SEQUENCE, UNSUPPORTED_OPCODE,
       TOO_MANY_OPERATIONS, TRAILING_BYTES, OUTCOME_COUNT };
static const char *OUTCOME_NAMES[OUTCOME_COUNT] = {
    "ok", "too deep", "truncated", "malformed", "memo out of sequence", "unsupported",
    "too many operations", "trailing bytes"};

#define SHORT_BINBYTES_OPCODE 'C'
#define DATETIME_PAYLOAD 10

typedef struct {
    long *items;
    Py_ssize_t length, capacity;
} Array;

static int array_push(Array *array, long value) {
    if (array->length == array->capacity) {
        Py_ssize_t capacity = array->capacity ? array->capacity * 2 : 256;
        long *items = PyMem_Realloc(array->items, (size_t)capacity * sizeof(long));
        if (items == NULL) return -1;
        array->items = items;
        array->capacity = capacity;
    }
    array->items[array->length++] = value;
    return 0;
}

/* Little-endian unsigned integer of the width bytes at position, or of those before the end
 * (Python's int.from_bytes of a slice that runs past the end). */
static uint64_t read_le(const unsigned char *data, Py_ssize_t size, Py_ssize_t position, int width) {
    uint64_t value = 0;
    for (int i = 0; i < width && position + i < size; i++) value |= (uint64_t)data[position + i] << (8 * i);
    return value;
}

/* position + amount, held at size + 1 once past the end: every later use only asks whether the
 * position is before, at or past the end. */
static Py_ssize_t advance(Py_ssize_t position, Py_ssize_t size, uint64_t amount) {
    if (position > size || amount > (uint64_t)(size - position)) return size + 1;
    return position + (Py_ssize_t)amount;
}

#define NEED(condition) do { if (!(condition)) goto index_error; } while (0)
#define PUSH(array, value) do { if (array_push(&(array), (value)) < 0) goto no_memory; } while (0)
#define TOP stack.items[stack.length - 1]

static PyObject *walk(PyObject *module, PyObject *args) {
    Py_buffer buffer, kinds_buffer, arguments_buffer;
    long limit;
    Py_ssize_t max_operations;
    PyObject *payloads;
    if (!PyArg_ParseTuple(args, "y*y*y*lnO", &buffer, &kinds_buffer, &arguments_buffer, &limit,
                          &max_operations, &payloads))
        return NULL;
    PyObject *result = NULL;
    if (kinds_buffer.len != 256 || arguments_buffer.len != 256 || (payloads != Py_None && !PyList_Check(payloads))) {
        PyErr_SetString(PyExc_ValueError, "walk needs 256-byte tables and a list or None");
        goto release;
    }
    const unsigned char *data = buffer.buf, *kinds = kinds_buffer.buf, *arguments = arguments_buffer.buf;
    Py_ssize_t size = buffer.len, position = 0;
    Array stack = {0}, marks = {0}, memo = {0};
    int outcome = OK;
    long detail = 0;

    Py_ssize_t operation;
    for (operation = 0; operation < max_operations; operation++) {
        NEED(position < size);
        unsigned char opcode = data[position];
        int kind = kinds[opcode], width = arguments[opcode];
        long depth, start;
        position++;
        switch (kind) {
        case GET: {
            uint64_t index;
            if (width == 1) {
                NEED(position < size);
                index = data[position];
            } else {
                index = read_le(data, size, position, width);
            }
            NEED(index < (uint64_t)memo.length);
            PUSH(stack, memo.items[index]);
            position = advance(position, size, (uint64_t)width);
            break;
        }
        case MEMOIZE:
            NEED(stack.length > 0);
            PUSH(memo, TOP);
            break;
        case FIXED:
            position = advance(position, size, (uint64_t)width);
            PUSH(stack, 0);
            break;
        case COUNTED:
            if (width == 1) {
                NEED(position < size);
                if (payloads != Py_None && opcode == SHORT_BINBYTES_OPCODE && data[position] == DATETIME_PAYLOAD) {
                    PyObject *offset = PyLong_FromSsize_t(position + 1);
                    if (offset == NULL || PyList_Append(payloads, offset) < 0) {
                        Py_XDECREF(offset);
                        goto failed;
                    }
                    Py_DECREF(offset);
                }
                position = advance(position, size, 1 + (uint64_t)data[position]);
            } else {
                uint64_t length = read_le(data, size, position, width);
                position = advance(advance(position, size, (uint64_t)width), size, length);
            }
            PUSH(stack, 0);
            break;
        case EMPTY:
            PUSH(stack, 1);
            break;
        case MARK:
            PUSH(marks, (long)stack.length);
            break;
        case EXTEND:
            NEED(marks.length > 0);
            start = marks.items[--marks.length];
            if (stack.length > start) {
                depth = 0;
                for (Py_ssize_t i = start; i < stack.length; i++)
                    if (stack.items[i] > depth) depth = stack.items[i];
                depth += 1;
                stack.length = start;
                NEED(stack.length > 0);
                if (depth > TOP) {
                    if (depth > limit) { outcome = TOO_DEEP; goto done; }
                    TOP = depth;
                }
            }
            break;
        case BUILD:
            NEED(stack.length > 0);
            depth = 1 + stack.items[--stack.length];
            NEED(stack.length > 0);
            if (depth > TOP) {
                if (depth > limit) { outcome = TOO_DEEP; goto done; }
                TOP = depth;
            }
            break;
        case CALL:
            NEED(stack.length > 0);
            depth = stack.items[--stack.length];
            NEED(stack.length > 0);
            if (depth > TOP) TOP = depth;
            break;
        case TUPLE_N:
            NEED(stack.length >= width);
            depth = 0;
            for (Py_ssize_t i = stack.length - width; i < stack.length; i++)
                if (stack.items[i] > depth) depth = stack.items[i];
            depth += 1;
            stack.length -= width;
            if (depth > limit) { outcome = TOO_DEEP; goto done; }
            PUSH(stack, depth);
            break;
        case FROM_MARK:
            NEED(marks.length > 0);
            start = marks.items[--marks.length];
            depth = 0;
            for (Py_ssize_t i = start; i < stack.length; i++)
                if (stack.items[i] > depth) depth = stack.items[i];
            depth += 1;
            if (stack.length > start) stack.length = start;
            if (depth > limit) { outcome = TOO_DEEP; goto done; }
            PUSH(stack, depth);
            break;
        case SETITEM: {
            NEED(stack.length > 0);
            long value = stack.items[--stack.length];
            NEED(stack.length > 0);
            long key = stack.items[--stack.length];
            depth = 1 + (value > key ? value : key);
            NEED(stack.length > 0);
            if (depth > TOP) {
                if (depth > limit) { outcome = TOO_DEEP; goto done; }
                TOP = depth;
            }
            break;
        }
        case NEWOBJ_EX: {
            NEED(stack.length > 0);
            long keywords = stack.items[--stack.length];
            NEED(stack.length > 0);
            long arguments_depth = stack.items[--stack.length];
            depth = keywords > arguments_depth ? keywords : arguments_depth;
            NEED(stack.length > 0);
            if (depth > TOP) TOP = depth;
            break;
        }
        case STACK_GLOBAL:
            NEED(stack.length > 0);
            stack.length--;
            NEED(stack.length > 0);
            TOP = 0;
            break;
        case PUT: {
            uint64_t index = read_le(data, size, position, width);
            position = advance(position, size, (uint64_t)width);
            if (index < (uint64_t)memo.length) {
                NEED(stack.length > 0);
                memo.items[index] = TOP;
            } else if (index == (uint64_t)memo.length) {
                NEED(stack.length > 0);
                PUSH(memo, TOP);
            } else {
                outcome = MEMO_OUT_OF_SEQUENCE;
                goto done;
            }
            break;
        }
        case FRAME:
        case PROTO:
            position = advance(position, size, (uint64_t)width);
            break;
        case GLOBAL: {  /* two lines: module, name; a missing line is Python's ValueError: truncated */
            int lines = 0;
            while (lines < 2) {
                if (position >= size) { outcome = TRUNCATED; goto done; }
                const unsigned char *newline = memchr(data + position, '\n', (size_t)(size - position));
                if (newline == NULL) { outcome = TRUNCATED; goto done; }
                position = (newline - data) + 1;
                lines++;
            }
            PUSH(stack, 0);
            break;
        }
        case POP:
            if (stack.length > 0 && (marks.length == 0 || stack.length > marks.items[marks.length - 1])) {
                stack.length--;
            } else {
                NEED(marks.length > 0);
                marks.length--;
            }
            break;
        case POP_MARK:
            NEED(marks.length > 0);
            start = marks.items[--marks.length];
            if (stack.length > start) stack.length = start;
            break;
        case DUP:
            NEED(stack.length > 0);
            PUSH(stack, TOP);
            break;
        case STOP:
            goto stopped;
        default:
            outcome = UNSUPPORTED_OPCODE;
            detail = opcode;
            goto done;
        }
    }
    outcome = TOO_MANY_OPERATIONS;
    goto done;
stopped:
    if (position > size) outcome = TRUNCATED;
    else if (position < size) outcome = TRAILING_BYTES;
    else if (stack.length != 1 || marks.length != 0) outcome = MALFORMED;
    goto done;
index_error:
    outcome = position >= size ? TRUNCATED : MALFORMED;
done:
    result = Py_BuildValue("(il)", outcome, detail);
    goto failed;
no_memory:
    PyErr_NoMemory();
failed:
    PyMem_Free(stack.items);
    PyMem_Free(marks.items);
    PyMem_Free(memo.items);
release:
    PyBuffer_Release(&buffer);
    PyBuffer_Release(&kinds_buffer);
    PyBuffer_Release(&arguments_buffer);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "walk(data, kinds, arguments, nesting_limit, max_operations, payloads) -> (outcome, detail)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT, "rdzv._opcode_walk", "rdzv.state's opcode check, in C.", -1, methods,
};

static PyObject *names_tuple(const char **names, int count) {
    PyObject *tuple = PyTuple_New(count);
    if (tuple == NULL) return NULL;
    for (int i = 0; i < count; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL) { Py_DECREF(tuple); return NULL; }
        PyTuple_SET_ITEM(tuple, i, name);
    }
    return tuple;
}

PyMODINIT_FUNC PyInit__opcode_walk(void) {
    PyObject *module = PyModule_Create(&definition);
    if (module == NULL) return NULL;
    if (PyModule_AddObject(module, "KINDS", names_tuple(KIND_NAMES, KIND_COUNT)) < 0 ||
        PyModule_AddObject(module, "OUTCOMES", names_tuple(OUTCOME_NAMES, OUTCOME_COUNT)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
