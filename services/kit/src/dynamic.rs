//! Calls any RPC in the descriptor pool without generated code: JSON ⇄ protobuf through
//! `prost_reflect::DynamicMessage`, sent with tonic's generic client and a codec that knows the
//! response type. The gateway uses it for REST, the orchestrator for port calls.
use bytes::Buf;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use tonic::{
    client::Grpc,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
    Status,
};

/// A client for every method reachable over one channel.
#[derive(Clone, Debug)]
pub struct DynamicClient {
    channel: Channel,
    max_message_bytes: usize,
}

impl DynamicClient {
    pub fn new(channel: Channel, max_message_bytes: usize) -> Self {
        DynamicClient {
            channel,
            max_message_bytes,
        }
    }

    /// One unary call; `request` must be of the method's input type.
    pub async fn unary(
        &self,
        method: &MethodDescriptor,
        request: tonic::Request<DynamicMessage>,
    ) -> Result<tonic::Response<DynamicMessage>, Status> {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let path =
            http::uri::PathAndQuery::try_from(path).map_err(|e| Status::internal(e.to_string()))?;
        let mut grpc = Grpc::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("service not ready: {e}")))?;
        grpc.unary(
            request,
            path,
            DynamicCodec {
                output: method.output(),
            },
        )
        .await
    }
}

/// Proto3 JSON → message, refusing unknown fields. The error text names the offending field.
pub fn message_from_json(
    desc: MessageDescriptor,
    json: &serde_json::Value,
) -> Result<DynamicMessage, String> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(desc, json, &options).map_err(|e| e.to_string())
}

/// Message → proto3 JSON bytes, written straight out (no intermediate `Value` tree): the
/// gateway's hot path.
pub fn message_to_json_bytes(msg: &DynamicMessage) -> Vec<u8> {
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::new(&mut out);
    match msg.serialize_with_options(&mut serializer, &options) {
        Ok(()) => out,
        Err(_) => b"null".to_vec(),
    }
}

/// Message → proto3 JSON (lowerCamelCase names, enums as names, 64-bit integers as strings).
pub fn message_to_json(msg: &DynamicMessage) -> serde_json::Value {
    // Defaults are written out: REST clients should not need the proto3 rule that `false` is absent.
    let options = SerializeOptions::new().skip_default_fields(false);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(serde_json::Value::Null)
}

#[derive(Clone)]
struct DynamicCodec {
    output: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            output: self.output.clone(),
        }
    }
}

struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encode: {e}")))
    }
}

struct DynamicDecoder {
    output: MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        DynamicMessage::decode(self.output.clone(), bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("decode: {e}")))
    }
}
