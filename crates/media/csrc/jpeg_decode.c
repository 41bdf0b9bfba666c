/*
 * Scaled JPEG decoding straight into a caller's buffer through libjpeg (the same library and
 * settings libvips' jpegload uses), for the edge's cold misses: no image pipeline, no
 * intermediate copies. Called from src/jpeg_decode.rs, which documents the contract.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>

#include <jerror.h>
#include <jpeglib.h>

/* What fp_jpeg_decode returns. */
#define FP_OK 0
#define FP_FAILED 1      /* libjpeg's message is in out->message */
#define FP_UNSUPPORTED 2 /* not 8-bit greyscale, YCbCr or RGB, or the buffer was refused */
#define FP_TRUNCATED 3   /* the data ended before the image did */
#define FP_CANCELLED 4   /* should_stop said so */

/* Rows decoded between two calls to should_stop. */
#define ROWS_PER_CHECK 16

typedef struct {
    unsigned int width;
    unsigned int height;
    unsigned int components;
    char message[JMSG_LENGTH_MAX];
} fp_jpeg_result;

typedef unsigned char *(*fp_alloc_fn)(void *ctx, size_t len);
typedef int (*fp_stop_fn)(void *ctx);

struct fp_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;
};

static void fp_error_exit(j_common_ptr cinfo) {
    struct fp_error *err = (struct fp_error *)cinfo->err;
    longjmp(err->jump, 1);
}

/* Warnings are not printed; running out of data is remembered. */
static void fp_emit_message(j_common_ptr cinfo, int level) {
    struct fp_error *err = (struct fp_error *)cinfo->err;
    if (level < 0 && err->pub.msg_code == JWRN_JPEG_EOF)
        err->truncated = 1;
}

static void fp_output_message(j_common_ptr cinfo) { (void)cinfo; }

int fp_jpeg_decode(const unsigned char *data, unsigned long len, unsigned int denom,
                   fp_alloc_fn alloc, void *alloc_ctx, fp_stop_fn should_stop, void *stop_ctx,
                   fp_jpeg_result *out) {
    struct jpeg_decompress_struct cinfo;
    struct fp_error err;

    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = fp_error_exit;
    err.pub.emit_message = fp_emit_message;
    err.pub.output_message = fp_output_message;
    err.truncated = 0;
    out->message[0] = '\0';
    if (setjmp(err.jump)) {
        (*cinfo.err->format_message)((j_common_ptr)&cinfo, out->message);
        jpeg_destroy_decompress(&cinfo);
        return FP_FAILED;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, len);
    jpeg_read_header(&cinfo, TRUE);
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo.out_color_space = JCS_GRAYSCALE;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        break;
    default:
        jpeg_destroy_decompress(&cinfo);
        return FP_UNSUPPORTED;
    }
    if (cinfo.data_precision != 8) {
        jpeg_destroy_decompress(&cinfo);
        return FP_UNSUPPORTED;
    }
    cinfo.scale_num = 1;
    cinfo.scale_denom = denom;
    jpeg_start_decompress(&cinfo);
    /* libjpeg rounds scaled sizes up; libvips rounds down and drops the partial last column
     * and row, and so do we, to give its pixels. */
    unsigned int width = cinfo.image_width / denom, height = cinfo.image_height / denom;
    width = width < 1 ? 1 : width > cinfo.output_width ? cinfo.output_width : width;
    height = height < 1 ? 1 : height > cinfo.output_height ? cinfo.output_height : height;
    out->width = width;
    out->height = height;
    out->components = (unsigned int)cinfo.output_components;
    size_t stride = (size_t)width * (size_t)cinfo.output_components;
    size_t row_len = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    /* Rows are stored `stride` apart but decoded whole: each row's extra samples land where
     * the next row goes, before it is decoded, and the last one's in a tail of slack. */
    unsigned char *pixels = alloc(alloc_ctx, stride * height + (row_len - stride));
    if (pixels == NULL) {
        jpeg_destroy_decompress(&cinfo);
        return FP_UNSUPPORTED;
    }
    while (cinfo.output_scanline < height) {
        if (cinfo.output_scanline % ROWS_PER_CHECK == 0 && should_stop(stop_ctx)) {
            jpeg_destroy_decompress(&cinfo);
            return FP_CANCELLED;
        }
        JSAMPROW row = pixels + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
        if (err.truncated) {
            jpeg_destroy_decompress(&cinfo);
            return FP_TRUNCATED;
        }
    }
    /* Rows past `height` (at most the partial one) are not needed. */
    jpeg_destroy_decompress(&cinfo);
    return FP_OK;
}
