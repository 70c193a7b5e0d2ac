//! Generates a lineitem-like table (TPC-H's columns and value ranges) as Parquet files.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

const ROWS_PER_BATCH: usize = 65_536;
const FILES: usize = 8;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("l_orderkey", DataType::Int64, false),
        Field::new("l_partkey", DataType::Int64, false),
        Field::new("l_suppkey", DataType::Int64, false),
        Field::new("l_linenumber", DataType::Int32, false),
        Field::new("l_quantity", DataType::Float64, false),
        Field::new("l_extendedprice", DataType::Float64, false),
        Field::new("l_discount", DataType::Float64, false),
        Field::new("l_tax", DataType::Float64, false),
        Field::new("l_returnflag", DataType::Utf8, false),
        Field::new("l_linestatus", DataType::Utf8, false),
        Field::new("l_shipdate", DataType::Date32, false),
        Field::new("l_shipmode", DataType::Utf8, false),
        Field::new("l_comment", DataType::Utf8, false),
    ]))
}

/// A small deterministic generator (splitmix64).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const MODES: [&str; 7] = ["AIR", "FOB", "MAIL", "RAIL", "REG AIR", "SHIP", "TRUCK"];
const WORDS: [&str; 12] = [
    "carefully",
    "final",
    "deposits",
    "quickly",
    "ironic",
    "packages",
    "sleep",
    "blithely",
    "regular",
    "accounts",
    "furiously",
    "bold",
];
/// 1992-01-02 as days since the epoch.
const FIRST_SHIP_DAY: i32 = 8036;

fn batch(first_row: usize, rows: usize, random: &mut Random) -> RecordBatch {
    let mut orderkey = Vec::with_capacity(rows);
    let mut partkey = Vec::with_capacity(rows);
    let mut suppkey = Vec::with_capacity(rows);
    let mut linenumber = Vec::with_capacity(rows);
    let mut quantity = Vec::with_capacity(rows);
    let mut price = Vec::with_capacity(rows);
    let mut discount = Vec::with_capacity(rows);
    let mut tax = Vec::with_capacity(rows);
    let mut returnflag = Vec::with_capacity(rows);
    let mut linestatus = Vec::with_capacity(rows);
    let mut shipdate = Vec::with_capacity(rows);
    let mut shipmode = Vec::with_capacity(rows);
    let mut comment = Vec::with_capacity(rows);
    for row in first_row..first_row + rows {
        orderkey.push((row / 4 + 1) as i64);
        partkey.push(random.below(200_000) as i64 + 1);
        suppkey.push(random.below(10_000) as i64 + 1);
        linenumber.push((row % 4 + 1) as i32);
        let q = (random.below(50) + 1) as f64;
        quantity.push(q);
        price.push(q * (900.0 + random.below(110_000) as f64 / 100.0));
        discount.push(random.below(11) as f64 / 100.0);
        tax.push(random.below(9) as f64 / 100.0);
        let day = FIRST_SHIP_DAY + random.below(2526) as i32;
        shipdate.push(day);
        // Lines shipped before mid-1995 are final; later ones are open, as in TPC-H.
        let open = day > 9298;
        linestatus.push(if open { "O" } else { "F" });
        returnflag.push(if open {
            "N"
        } else if random.below(2) == 0 {
            "R"
        } else {
            "A"
        });
        shipmode.push(MODES[random.below(7) as usize]);
        let words = 2 + random.below(4) as usize;
        let text: Vec<&str> = (0..words)
            .map(|_| WORDS[random.below(12) as usize])
            .collect();
        comment.push(text.join(" "));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(orderkey)),
        Arc::new(Int64Array::from(partkey)),
        Arc::new(Int64Array::from(suppkey)),
        Arc::new(Int32Array::from(linenumber)),
        Arc::new(Float64Array::from(quantity)),
        Arc::new(Float64Array::from(price)),
        Arc::new(Float64Array::from(discount)),
        Arc::new(Float64Array::from(tax)),
        Arc::new(StringArray::from(returnflag)),
        Arc::new(StringArray::from(linestatus)),
        Arc::new(Date32Array::from(shipdate)),
        Arc::new(StringArray::from(shipmode)),
        Arc::new(StringArray::from(comment)),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns match the schema")
}

fn write_file(
    path: &Path,
    first_row: usize,
    rows: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1_000_000))
        .build();
    let file = std::fs::File::create(path)?;
    let mut writer = ArrowWriter::try_new(file, schema(), Some(properties))?;
    let mut random = Random(first_row as u64 ^ 0x5EED);
    let mut written = 0;
    while written < rows {
        let count = ROWS_PER_BATCH.min(rows - written);
        writer.write(&batch(first_row + written, count, &mut random))?;
        written += count;
    }
    writer.close()?;
    Ok(())
}

/// Writes `rows` rows as Parquet files (Snappy, row groups of a million rows) into `dir`.
pub fn generate(dir: &Path, rows: usize) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let staging = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let per_file = rows.div_ceil(FILES);
    let handles: Vec<_> = (0..FILES)
        .map(|file| {
            let first = file * per_file;
            let count = per_file.min(rows.saturating_sub(first));
            let path = staging.join(format!("part-{file}.parquet"));
            std::thread::spawn(move || {
                if count > 0 {
                    write_file(&path, first, count)
                } else {
                    Ok(())
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a generator thread panicked")??;
    }
    std::fs::rename(&staging, dir)?;
    Ok(())
}
