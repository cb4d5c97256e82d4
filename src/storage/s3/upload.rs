//! A large body streamed into a multipart upload with bounded memory: the body is cut into parts
//! of [`PART_SIZE`] (zero-copy slices of the chunks received), and at most [`MAX_HELD_PARTS`]
//! parts are held at once, the one filling and the one uploading. A slow store slows the
//! download instead of filling memory.

use bytes::Bytes;
use object_store::{MultipartUpload, PutPayload};
use tokio::task::JoinSet;

/// The size of every part but the last (S3 requires at least 5 MiB for all parts but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts held in memory at most: one being filled, the others uploading.
pub const MAX_HELD_PARTS: usize = 2;

/// Cuts a body into parts and uploads them, never holding more than
/// [`MAX_HELD_PARTS`] × part size bytes of it.
pub struct PartWriter {
    upload: Box<dyn MultipartUpload>,
    part_size: usize,
    filling: Vec<Bytes>,
    filled: usize,
    uploading: JoinSet<Result<usize, object_store::Error>>,
    held: usize,
    peak: usize,
    parts: usize,
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter")
            .field("part_size", &self.part_size)
            .field("held", &self.held)
            .field("parts", &self.parts)
            .finish_non_exhaustive()
    }
}

impl PartWriter {
    pub fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Self::with_part_size(upload, PART_SIZE)
    }

    /// A writer with another part size (tests use small ones to count parts cheaply).
    pub fn with_part_size(upload: Box<dyn MultipartUpload>, part_size: usize) -> Self {
        Self {
            upload,
            part_size: part_size.max(1),
            filling: Vec::new(),
            filled: 0,
            uploading: JoinSet::new(),
            held: 0,
            peak: 0,
            parts: 0,
        }
    }

    /// Adds a chunk, sending each part as soon as it is full; waits for an upload to finish
    /// first when the bound would be exceeded.
    pub async fn write(&mut self, mut chunk: Bytes) -> Result<(), object_store::Error> {
        while !chunk.is_empty() {
            let room = self.part_size - self.filled;
            let piece = chunk.split_to(room.min(chunk.len()));
            self.filled += piece.len();
            self.held += piece.len();
            self.peak = self.peak.max(self.held);
            self.filling.push(piece);
            if self.filled == self.part_size {
                self.send_part().await?;
            }
        }
        Ok(())
    }

    /// Uploads what is left and completes the upload: the object exists from here on.
    pub async fn finish(mut self) -> Result<object_store::PutResult, object_store::Error> {
        if self.filled > 0 || self.parts == 0 {
            self.send_part().await?;
        }
        while self.wait_one().await? {}
        self.upload.complete().await
    }

    /// Gives the upload up: nothing becomes visible, and the parts sent are freed by the store.
    pub async fn abort(mut self) {
        self.uploading.abort_all();
        let _ = self.upload.abort().await;
    }

    /// The most body bytes held at once so far.
    pub fn peak_held(&self) -> usize {
        self.peak
    }

    /// Parts sent so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    async fn send_part(&mut self) -> Result<(), object_store::Error> {
        // The part being filled counts as one held part: wait until the uploads leave room.
        while self.uploading.len() + 1 >= MAX_HELD_PARTS && self.wait_one().await? {}
        let payload = PutPayload::from_iter(std::mem::take(&mut self.filling));
        let size = std::mem::take(&mut self.filled);
        let part = self.upload.put_part(payload);
        self.uploading
            .spawn(async move { part.await.map(|()| size) });
        self.parts += 1;
        Ok(())
    }

    /// Waits for one upload to finish; false when none was running.
    async fn wait_one(&mut self) -> Result<bool, object_store::Error> {
        match self.uploading.join_next().await {
            None => Ok(false),
            Some(Ok(Ok(size))) => {
                self.held -= size;
                Ok(true)
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(join)) => Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(join),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, memory::InMemory, path::Path};

    #[tokio::test]
    async fn holds_at_most_two_parts_and_keeps_every_byte() {
        let store = InMemory::new();
        let path = Path::from("big");
        let upload = store.put_multipart(&path).await.unwrap();
        let mut w = PartWriter::with_part_size(upload, 1000);
        let mut expected = Vec::new();
        for i in 0..97u32 {
            // Chunks of odd sizes, some larger than a part.
            let chunk: Vec<u8> = (0..(i * 37 % 2500)).map(|j| (i + j) as u8).collect();
            expected.extend_from_slice(&chunk);
            w.write(Bytes::from(chunk)).await.unwrap();
            assert!(w.peak_held() <= MAX_HELD_PARTS * 1000, "{}", w.peak_held());
        }
        let parts = w.parts();
        assert!(w.peak_held() > 1000, "never overlapped: {}", w.peak_held());
        w.finish().await.unwrap();
        assert_eq!(parts, expected.len() / 1000);
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), expected.as_slice());
    }
}
