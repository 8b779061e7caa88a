//! Reading newline-delimited lines from a stream with a length limit:
//! longer lines come out in pieces flagged `split`, never dropped.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

pub struct LimitedLine {
    pub bytes: Vec<u8>,
    pub split: bool,
}

/// The next line (without its `\n` or `\r\n`), `None` at end of input. A
/// final line without a newline is returned too.
pub async fn next_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> std::io::Result<Option<LimitedLine>> {
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(LimitedLine { bytes: line, split: false }) });
        }
        let room = max - line.len();
        match available.iter().take(room + 1).position(|b| *b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&available[..i]);
                reader.consume(i + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(LimitedLine { bytes: line, split: false }));
            }
            None => {
                let take = available.len().min(room);
                line.extend_from_slice(&available[..take]);
                reader.consume(take);
                if line.len() >= max {
                    return Ok(Some(LimitedLine { bytes: line, split: true }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_long_lines_and_keeps_the_last_one() {
        let input = format!("short\r\n{}\nend", "x".repeat(25));
        let mut r = tokio::io::BufReader::with_capacity(4, input.as_bytes());
        let mut got = vec![];
        while let Some(l) = next_line(&mut r, 10).await.unwrap() {
            got.push((String::from_utf8(l.bytes).unwrap(), l.split));
        }
        let want = [("short", false), ("xxxxxxxxxx", true), ("xxxxxxxxxx", true), ("xxxxx", false), ("end", false)];
        assert_eq!(got, want.map(|(s, b)| (s.to_string(), b)));
    }
}
