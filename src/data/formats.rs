//! The hub's dataset file formats: a string column of a parquet file (arrow-rs `parquet`,
//! snappy or uncompressed), and gzipped JSON lines (`flate2`).

use crate::hub::one_line;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;

fn open_parquet(path: &Path) -> Result<parquet::file::serialized_reader::SerializedFileReader<std::fs::File>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    parquet::file::serialized_reader::SerializedFileReader::new(file)
        .map_err(|e| anyhow!("not a readable parquet file: {}", one_line(&e.to_string())))
}

/// The index of a top-level, non-repeated string (BYTE_ARRAY) column.
fn string_column(reader: &impl parquet::file::reader::FileReader, column: &str) -> Result<usize> {
    let schema = reader.metadata().file_metadata().schema_descr();
    let cols = schema.columns();
    let Some(i) = cols.iter().position(|c| c.path().parts() == [column.to_string()]) else {
        let names: Vec<String> = cols.iter().map(|c| c.path().string()).collect();
        bail!("the parquet file has no column '{column}' (its columns: {})", names.join(", "));
    };
    let c = &cols[i];
    if c.physical_type() != parquet::basic::Type::BYTE_ARRAY || c.max_rep_level() != 0 {
        bail!("parquet column '{column}' is not a string column (it is {:?})", c.physical_type());
    }
    for rg in reader.metadata().row_groups() {
        let codec = rg.column(i).compression();
        if !codec_supported(codec) {
            return Err(anyhow::Error::new(Unsupported(format!(
                "parquet column '{column}' is {codec:?}-compressed, and this build reads only snappy and uncompressed parquet (the `parquet` crate's \"snap\" feature)"
            ))));
        }
    }
    Ok(i)
}

/// The codecs the `parquet` dependency is built with: the hub's datasets write snappy.
fn codec_supported(c: parquet::basic::Compression) -> bool {
    matches!(c, parquet::basic::Compression::UNCOMPRESSED | parquet::basic::Compression::SNAPPY)
}

/// A sound file this build cannot read: not removed from the cache.
#[derive(Debug)]
struct Unsupported(String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

pub(crate) fn is_unsupported(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Unsupported>())
}

/// Footer, schema and column only (reads the footer, not the data).
pub fn check_parquet_column(path: &Path, column: &str) -> Result<()> {
    crate::contain::contain("corrupt parquet data: the parquet reader", || {
        let reader = open_parquet(path)?;
        stated_rows(&reader, path)?;
        string_column(&reader, column).map(drop)
    })
}

/// Every value of a string column, in row order. A null value is an error (datautils' join
/// would fail on it too); empty strings are kept (WikiText's blank rows are "").
pub fn read_parquet_strings(path: &Path, column: &str) -> Result<Vec<String>> {
    crate::contain::contain("corrupt parquet data: the parquet reader", || read_strings(path, column))
}

fn read_strings(path: &Path, column: &str) -> Result<Vec<String>> {
    use parquet::column::reader::get_typed_column_reader;
    use parquet::data_type::ByteArrayType;
    use parquet::file::reader::FileReader;
    let reader = open_parquet(path)?;
    let idx = string_column(&reader, column)?;
    let bad = |e: parquet::errors::ParquetError| anyhow!("corrupt parquet data: {}", one_line(&e.to_string()));
    let total = stated_rows(&reader, path)?;
    // Sized by what the file could hold, never by its footer alone.
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut out = Vec::with_capacity(total.min(usize::try_from(file_len).unwrap_or(usize::MAX)));
    for rg in 0..reader.num_row_groups() {
        let group = reader.get_row_group(rg).map_err(bad)?;
        let rows = group.metadata().num_rows() as usize; // checked non-negative by stated_rows
        let max_def = group.metadata().column(idx).column_descr().max_def_level();
        let mut col = get_typed_column_reader::<ByteArrayType>(group.get_column_reader(idx).map_err(bad)?);
        let start = out.len();
        let (mut defs, mut vals) = (Vec::new(), Vec::new());
        loop {
            defs.clear();
            vals.clear();
            let (records, _values, levels) = col.read_records(8192, Some(&mut defs), None, &mut vals).map_err(bad)?;
            if records == 0 {
                break;
            }
            let mut values = vals.iter();
            let mut take = |out: &mut Vec<String>| -> Result<()> {
                let v = values.next().ok_or_else(|| anyhow!("corrupt parquet data: fewer values than rows"))?;
                let s = std::str::from_utf8(v.data())
                    .map_err(|_| anyhow!("column '{column}' row {} is not UTF-8", out.len()))?;
                out.push(s.to_string());
                Ok(())
            };
            if max_def == 0 {
                for _ in 0..records {
                    take(&mut out)?;
                }
            } else {
                for &d in &defs[..levels] {
                    if d < max_def {
                        bail!("column '{column}' row {} is null", out.len());
                    }
                    take(&mut out)?;
                }
            }
        }
        if out.len() - start != rows {
            bail!("corrupt parquet data: row group {rg} holds {} of its {rows} rows", out.len() - start);
        }
    }
    if out.len() != total {
        bail!("corrupt parquet data: {} of {total} rows", out.len());
    }
    Ok(out)
}

/// The most rows a corpus file may state (the largest the hub's corpora hold: C4's train shard,
/// 356 317 documents).
pub const MAX_PARQUET_ROWS: u64 = 1 << 28;

/// The row count the footer states, checked: non-negative in every row group, summing to the
/// file's count, within [`MAX_PARQUET_ROWS`].
fn stated_rows(reader: &impl parquet::file::reader::FileReader, path: &Path) -> Result<usize> {
    let meta = reader.metadata();
    let total = meta.file_metadata().num_rows();
    let mut sum = 0u64;
    for (i, rg) in meta.row_groups().iter().enumerate() {
        let n = u64::try_from(rg.num_rows())
            .map_err(|_| anyhow!("corrupt parquet footer: row group {i} states {} rows", rg.num_rows()))?;
        sum = sum.checked_add(n).ok_or_else(|| anyhow!("corrupt parquet footer: row counts overflow"))?;
    }
    let total = u64::try_from(total).map_err(|_| anyhow!("corrupt parquet footer: it states {total} rows"))?;
    if sum != total {
        bail!("corrupt parquet footer: it states {total} rows, its row groups {sum}");
    }
    if total > MAX_PARQUET_ROWS {
        bail!(
            "{}: the parquet footer states {total} rows, over this tool's limit of {MAX_PARQUET_ROWS}",
            path.display()
        );
    }
    Ok(total as usize)
}

/// The top-level columns of a parquet file (nested ones by their outer name), after checking
/// that every row group uses a codec this build reads.
fn top_level_columns(reader: &impl parquet::file::reader::FileReader) -> Result<Vec<String>> {
    let meta = reader.metadata();
    for rg in meta.row_groups() {
        for c in rg.columns() {
            if !codec_supported(c.compression()) {
                return Err(anyhow::Error::new(Unsupported(format!(
                    "parquet column '{}' is {:?}-compressed, and this build reads only snappy and uncompressed parquet (the `parquet` crate's \"snap\" feature)",
                    c.column_path().string(),
                    c.compression()
                ))));
            }
        }
    }
    Ok(meta.file_metadata().schema_descr().root_schema().get_fields().iter().map(|f| f.name().to_string()).collect())
}

fn require_columns(have: &[String], need: &[&str]) -> Result<()> {
    let missing: Vec<&str> = need.iter().copied().filter(|n| !have.iter().any(|h| h == n)).collect();
    if !missing.is_empty() {
        bail!(
            "the parquet file lacks column{} {} (its columns: {})",
            if missing.len() == 1 { "" } else { "s" },
            missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
            have.join(", ")
        );
    }
    Ok(())
}

/// Footer and schema only: every one of `columns` is a top-level column.
pub fn check_parquet_columns(path: &Path, columns: &[&str]) -> Result<()> {
    require_columns(&top_level_columns(&open_parquet(path)?)?, columns)
}

/// Every row of a parquet file as a JSON object of its columns (strings, numbers, lists as
/// arrays, structs as objects, nulls), after checking that `columns` are there: the rows of
/// the zero-shot tasks' dataset files, to be read into each task's row type.
pub fn read_parquet_rows(path: &Path, columns: &[&str]) -> Result<Vec<serde_json::Value>> {
    use parquet::file::reader::FileReader;
    let reader = open_parquet(path)?;
    require_columns(&top_level_columns(&reader)?, columns)?;
    let total = stated_rows(&reader, path)?;
    let mut out = Vec::new();
    let rows = reader.get_row_iter(None).map_err(|e| anyhow!("corrupt parquet data: {}", one_line(&e.to_string())))?;
    for row in rows {
        let row = row.map_err(|e| anyhow!("corrupt parquet data: {}", one_line(&e.to_string())))?;
        out.push(row_json(&row));
    }
    if out.len() != total {
        bail!("corrupt parquet data: {} of {total} rows", out.len());
    }
    Ok(out)
}

fn row_json(row: &parquet::record::Row) -> serde_json::Value {
    serde_json::Value::Object(row.get_column_iter().map(|(k, f)| (k.clone(), field_json(f))).collect())
}

/// One parquet value as JSON (the kinds the hub's dataset files hold; others as strings).
fn field_json(f: &parquet::record::Field) -> serde_json::Value {
    use parquet::record::Field;
    use serde_json::Value;
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => (*v).into(),
        Field::Short(v) => (*v).into(),
        Field::Int(v) => (*v).into(),
        Field::Long(v) => (*v).into(),
        Field::UByte(v) => (*v).into(),
        Field::UShort(v) => (*v).into(),
        Field::UInt(v) => (*v).into(),
        Field::ULong(v) => (*v).into(),
        Field::Float(v) => (*v as f64).into(),
        Field::Double(v) => (*v).into(),
        Field::Str(s) => Value::String(s.clone()),
        Field::Group(row) => row_json(row),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_json).collect()),
        other => Value::String(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Gzipped JSON lines.

#[derive(serde::Deserialize)]
struct Doc {
    text: String,
}

fn gz_reader(path: &Path) -> Result<BufReader<flate2::read::MultiGzDecoder<std::fs::File>>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(file)))
}

fn gz_error(e: std::io::Error) -> anyhow::Error {
    anyhow!("corrupt gzip data: {}", one_line(&e.to_string()))
}

/// The longest JSON line read (a C4 document is at most a few hundred KB): a gzip stream that
/// decompresses to one endless line is refused at this length, not read into memory whole.
pub const MAX_JSON_LINE: u64 = 64 << 20;

/// The "text" field of up to `limit` JSON lines (blank lines skipped), as `data` reads a
/// `.jsonl` file.
pub fn read_gz_jsonl_texts(path: &Path, limit: usize) -> Result<Vec<String>> {
    use std::io::Read;
    let mut reader = gz_reader(path)?;
    let mut out = Vec::new();
    let mut line = String::new();
    let mut n = 0usize;
    while out.len() < limit {
        line.clear();
        if (&mut reader).take(MAX_JSON_LINE + 1).read_line(&mut line).map_err(gz_error)? == 0 {
            break;
        }
        n += 1;
        if line.len() as u64 > MAX_JSON_LINE {
            bail!("line {n} is longer than {MAX_JSON_LINE} bytes: not a JSON-lines corpus this tool reads");
        }
        let l = line.strip_suffix('\n').unwrap_or(&line);
        let l = l.strip_suffix('\r').unwrap_or(l);
        if l.trim().is_empty() {
            continue;
        }
        let doc: Doc = serde_json::from_str(l).map_err(|e| {
            anyhow!("line {n}: not a JSON object with a \"text\" string ({})", one_line(&e.to_string()))
        })?;
        out.push(doc.text);
    }
    if out.is_empty() && limit > 0 {
        bail!("no JSON lines in the gzip file");
    }
    Ok(out)
}

/// Decompresses to the end (the gzip CRC and length are checked there) and parses the first line.
pub fn check_gz_jsonl(path: &Path) -> Result<()> {
    read_gz_jsonl_texts(path, 1)?;
    let mut reader = gz_reader(path)?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(gz_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-row-group parquet file of `rows` strings whose footer's file-level row count is
    /// replaced by `claim` (compact thrift: field 3 of FileMetaData, an i64 zigzag varint, the
    /// first `0x16 <rows·2>` after the schema).
    fn parquet_claiming(rows: usize, claim: i64) -> Vec<u8> {
        use parquet::data_type::{ByteArray, ByteArrayType};
        use std::sync::Arc;
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type("message schema { required binary text (STRING); }").unwrap(),
        );
        let props = Arc::new(parquet::file::properties::WriterProperties::builder().build());
        let mut w = parquet::file::writer::SerializedFileWriter::new(Vec::new(), schema, props).unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let vals: Vec<ByteArray> = (0..rows).map(|i| ByteArray::from(format!("row {i}").into_bytes())).collect();
        col.typed::<ByteArrayType>().write_batch(&vals, None, None).unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        let bytes = w.into_inner().unwrap();
        let n = bytes.len();
        let flen = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        let footer = &bytes[n - 8 - flen..n - 8];
        let at = footer.windows(2).position(|w| w == [0x16, (rows * 2) as u8]).expect("num_rows field") + 1;
        let mut zz = ((claim << 1) ^ (claim >> 63)) as u64;
        let mut varint = Vec::new();
        loop {
            let b = (zz & 0x7f) as u8;
            zz >>= 7;
            if zz == 0 {
                varint.push(b);
                break;
            }
            varint.push(b | 0x80);
        }
        let mut new_footer = footer[..at].to_vec();
        new_footer.extend(&varint);
        new_footer.extend(&footer[at + 1..]);
        let mut out = bytes[..n - 8 - flen].to_vec();
        out.extend(&new_footer);
        out.extend((new_footer.len() as u32).to_le_bytes());
        out.extend(b"PAR1");
        out
    }

    #[test]
    fn footer_row_counts_are_checked_before_anything_is_allocated() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.parquet");
        std::fs::write(&p, parquet_claiming(3, 3)).unwrap();
        assert_eq!(read_parquet_strings(&p, "text").unwrap(), ["row 0", "row 1", "row 2"]);
        for (claim, needle) in [
            (1i64 << 62, "it states 4611686018427387904 rows, its row groups 3"),
            (-5, "it states -5 rows"),
            (4, "it states 4 rows, its row groups 3"),
        ] {
            std::fs::write(&p, parquet_claiming(3, claim)).unwrap();
            let e = read_parquet_strings(&p, "text").unwrap_err().to_string();
            assert!(e.contains(needle), "{claim}: {e}");
            let e = check_parquet_column(&p, "text").unwrap_err().to_string();
            assert!(e.contains(needle), "{claim}: {e}");
        }
    }

    #[test]
    fn an_endless_json_line_is_refused_at_the_limit() {
        use std::io::Write;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c4.json.gz");
        let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&p).unwrap(), flate2::Compression::fast());
        e.write_all(b"{\"text\": \"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..(MAX_JSON_LINE >> 20) + 1 {
            e.write_all(&chunk).unwrap();
        }
        e.finish().unwrap();
        let err = read_gz_jsonl_texts(&p, 10).unwrap_err().to_string();
        assert!(err.contains("line 1 is longer than 67108864 bytes"), "{err}");
    }

    #[test]
    fn only_snappy_and_uncompressed_parquet_are_read() {
        use parquet::basic::{Compression, ZstdLevel};
        assert!(codec_supported(Compression::SNAPPY) && codec_supported(Compression::UNCOMPRESSED));
        assert!(!codec_supported(Compression::ZSTD(ZstdLevel::default())));
        let e = anyhow::Error::new(Unsupported("x".into())).context("reading");
        assert!(is_unsupported(&e));
        assert!(!is_unsupported(&anyhow!("corrupt")));
    }
}
