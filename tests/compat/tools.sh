# Sourced by tests/compat/run.sh and tests/bench/compare.sh: finds (or installs into
# $COMPAT) the released mitosis 0.6.8 and s3s-fs, and sets MITOSIS_BIN and S3S_FS.
# $1 names the caller in its messages.
find_compat_tools() {
    local who=$1
    if [ -z "${MITOSIS_BIN:-}" ]; then
        MITOSIS_BIN=/opt/mitosis-0.6.8/bin/mito
        if [ ! -x "$MITOSIS_BIN" ]; then
            MITOSIS_BIN="$COMPAT/mitosis-0.6.8/bin/mito"
            if [ ! -x "$MITOSIS_BIN" ]; then
                echo "$who: installing mitosis 0.6.8 into .compat/mitosis-0.6.8 (takes several minutes)"
                cargo install mito --version 0.6.8 --locked --root "$COMPAT/mitosis-0.6.8" || exit 2
            fi
        fi
    fi
    S3S_FS=${MITO_TEST_S3S_FS:-/opt/s3s-fs/bin/s3s-fs}
    if [ ! -x "$S3S_FS" ]; then
        S3S_FS="$COMPAT/s3s-fs/bin/s3s-fs"
        if [ ! -x "$S3S_FS" ]; then
            echo "$who: installing s3s-fs 0.14.1 into .compat/s3s-fs"
            cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$COMPAT/s3s-fs" || exit 2
        fi
    fi
}
